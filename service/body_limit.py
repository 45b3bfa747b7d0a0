"""Refuses oversized uploads while they stream in, before the multipart parser spools them to disk:
the whole body against the sum of the limits, and each multipart part against its own limit
(MAX_MODEL_BYTES for `model`, ...), counted by a second, streaming multipart parser that keeps
nothing. A 300 MB model against a 1 MiB limit is a 413 after about 1 MiB."""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.problems import problem, too_large


class PartCounter:
    """Bytes of each part of a multipart body fed to it chunk by chunk; too_large past a limit."""

    def __init__(self, boundary: bytes, limits: dict[str, int], other: int) -> None:
        self.limits, self.other = limits, other
        self.name, self.size = "", 0
        self._header, self._value = b"", b""
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_part_data": self._data,
            },
        )

    def _begin(self) -> None:
        self.name, self.size, self._header, self._value = "", 0, b"", b""

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            _, options = parse_options_header(self._value)
            self.name = options.get(b"name", b"").decode("latin-1")
        self._header, self._value = b"", b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.size += end - start
        limit = self.limits.get(self.name, self.other)
        if self.size > limit:
            raise too_large(self.name or "part", limit)

    def feed(self, chunk: bytes) -> None:
        self.parser.write(chunk)


class BodyLimit:
    """Caps the request body of one path, and each of its multipart parts."""

    def __init__(self, app: ASGIApp, path: str, limit: int, parts: dict[str, int], other: int) -> None:
        self.app = app
        self.path = path
        self.limit = limit
        self.parts = parts
        self.other = other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            exc = too_large("request body", self.limit)
            await problem(exc.status, exc.code, exc.message, exc.detail)(scope, receive, send)
            return
        kind, options = parse_options_header(headers.get(b"content-type", b""))
        counter = None
        if kind == b"multipart/form-data" and options.get(b"boundary"):
            counter = PartCounter(options[b"boundary"], self.parts, self.other)
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen, counter
            message = await receive()
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.limit:
                raise too_large("request body", self.limit)
            if counter is not None and body:
                try:
                    counter.feed(body)
                except MultipartParseError:
                    counter = None  # malformed: the form parser names the problem
            return message

        await self.app(scope, counting_receive, send)
