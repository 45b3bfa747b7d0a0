"""The door every request passes before any of its body is read: the bearer token (401) and the
rate limit (429 with Retry-After). A 300 MB anonymous upload is refused on its headers, not after
it was spooled to disk.

The caller's owner name goes into the request scope (`scope["state"]["owner"]`), where
`service.context.caller` reads it. Open paths (health checks, docs) need no token; /readyz answers
a caller without one with ready / not ready only.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import owner_of
from service.problems import problem

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: dict[str, str],
        client: redis.Redis,
        prefix: str,
        limit: int,
        window: int,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.redis = client
        self.prefix = prefix
        self.limit = limit
        self.window = window

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        owner = owner_of(self.tokens, headers.get(b"authorization", b"").decode("latin-1"))
        if not self.tokens:
            owner = ""
        state = scope.setdefault("state", {})
        state["owner"] = owner
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if owner is None:
            response = problem(
                401,
                "E_UNAUTHORIZED",
                "this API needs 'Authorization: Bearer <token>' (API_TOKEN, API_TOKENS or API_TOKENS_FILE)",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        client = scope.get("client")
        who = f"owner:{owner}" if self.tokens else f"addr:{client[0] if client else 'unknown'}"
        retry_after = await self._over_limit(who)
        if retry_after:
            response = problem(
                429,
                "E_RATE_LIMITED",
                f"more than {self.limit} requests in {self.window} s; retry in {retry_after} s",
                {"limit": self.limit, "window": self.window},
                headers={"Retry-After": str(retry_after)},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _over_limit(self, who: str) -> int:
        """Seconds until the caller's window ends if it is over the limit, else 0 (a fixed window per
        caller, counted in Redis so every API process shares it; open when Redis is down)."""
        if not self.limit:
            return 0
        now = time.time()
        window = int(now // self.window)
        key = f"{self.prefix}:rate:{who}:{window}"

        def count() -> int:
            pipe = self.redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, self.window + 1)
            return int(pipe.execute()[0])

        try:
            seen = await asyncio.to_thread(count)
        except redis.RedisError as exc:
            log.warning("rate limit not checked (%s)", exc)
            return 0
        if seen <= self.limit:
            return 0
        return max(1, int((window + 1) * self.window - now + 0.999))
