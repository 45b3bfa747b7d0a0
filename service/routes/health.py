"""Liveness and readiness: open even when API_TOKEN is set, for load balancers and orchestrators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from service.context import Context, get_context
from service.problems import ApiError

router = APIRouter(tags=["health"])

PING_TIMEOUT = 1.0  # seconds a worker has to answer the readiness ping


@router.get("/healthz", summary="The API process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis answers and at least one worker answers a ping")
def readyz(ctx: Annotated[Context, Depends(get_context)]) -> dict[str, Any]:
    try:
        ctx.jobs.redis.ping()
    except RedisError as exc:
        raise ApiError(503, "E_NOT_READY", f"Redis is unreachable: {exc}", redis=False) from None
    try:
        replies = ctx.celery.control.ping(timeout=PING_TIMEOUT) or []
    except (RedisError, KombuError, OSError) as exc:
        raise ApiError(503, "E_NOT_READY", f"cannot ping workers: {exc}", redis=True) from None
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        raise ApiError(
            503, "E_NOT_READY", "no worker answered; start one with `tvmq worker`", redis=True, workers=[]
        )
    return {"status": "ready", "redis": True, "workers": workers}
