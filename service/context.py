"""What every route needs, built once per app from Settings and reached through `get_context`;
the caller's owner name, which `service.gate.Gate` found from the bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from worker.runtime.jobs import JobStore
from worker.runtime.settings import Settings
from worker.runtime.storage import BlobStore


@dataclass(frozen=True)
class Context:
    settings: Settings
    jobs: JobStore
    blobs: BlobStore
    celery: Celery
    tokens: dict[str, str]  # token -> owner; empty: auth off

    @property
    def auth(self) -> bool:
        return bool(self.tokens)


def get_context(request: Request) -> Context:
    return request.app.state.context


# Documents the bearer scheme in OpenAPI; the Gate has checked the token before the body was read.
_bearer = HTTPBearer(auto_error=False, description="a token of API_TOKEN / API_TOKENS / API_TOKENS_FILE")


def caller(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None
) -> str | None:
    """The caller's owner name ("" with auth off); None for a caller without a valid token (only
    open paths let one through)."""
    return request.scope.get("state", {}).get("owner")


Caller = Annotated[str | None, Depends(caller)]
