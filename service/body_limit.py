"""Refuses oversized uploads while they stream in, before the multipart parser spools them to disk."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.problems import problem, too_large


class BodyLimit:
    """Caps the request body of one path; the per-file limits are checked after parsing."""

    def __init__(self, app: ASGIApp, path: str, limit: int) -> None:
        self.app = app
        self.path = path
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            exc = too_large("request body", self.limit)
            await problem(exc.status, exc.code, exc.message, exc.detail)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise too_large("request body", self.limit)
            return message

        await self.app(scope, counting_receive, send)
