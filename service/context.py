"""What every route needs, built once per app from Settings and reached through `get_context`."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from celery import Celery
from fastapi import Request

from service.problems import ApiError
from worker.runtime.jobs import JobStore
from worker.runtime.settings import Settings
from worker.runtime.storage import BlobStore


@dataclass(frozen=True)
class Context:
    settings: Settings
    jobs: JobStore
    blobs: BlobStore
    celery: Celery


def get_context(request: Request) -> Context:
    return request.app.state.context


def require_token(request: Request) -> None:
    """Bearer-token check, active only when API_TOKEN is set."""
    expected = get_context(request).settings.api_token
    if not expected:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(
            401,
            "E_UNAUTHORIZED",
            "this API needs 'Authorization: Bearer <API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
