"""Liveness and readiness: open even when API_TOKEN is set, for load balancers and orchestrators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from service.context import Caller, Context, get_context
from service.problems import ApiError, problem_responses

router = APIRouter(tags=["health"])

PING_TIMEOUT = 1.0  # seconds a worker has to answer the readiness ping


@router.get("/healthz", summary="The API process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Redis answers and at least one worker answers a ping (details only with a token)",
    responses=problem_responses(503),
)
def readyz(ctx: Annotated[Context, Depends(get_context)], owner: Caller) -> dict[str, Any]:
    if owner is None:  # no valid token: ready or not, nothing about the deployment
        try:
            _check(ctx)
        except ApiError:
            raise ApiError(503, "E_NOT_READY", "not ready") from None
        return {"status": "ready"}
    return _check(ctx)


def _check(ctx: Context) -> dict[str, Any]:
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
