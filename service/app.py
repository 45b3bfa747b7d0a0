"""create_app(): the FastAPI application (uvicorn runs `service.app:create_app` as a factory)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from service.auth import load_tokens
from service.body_limit import BodyLimit
from service.context import Context, caller
from service.gate import Gate
from service.problems import install_handlers
from service.routes import health, jobs, quantize, schema
from worker.runtime.celery_app import make_celery
from worker.runtime.jobs import JobStore
from worker.runtime.recovery import recover_lost_jobs
from worker.runtime.settings import Settings, get_settings
from worker.runtime.storage import BlobStore

log = logging.getLogger(__name__)
MULTIPART_OVERHEAD = 1024 * 1024  # bytes of form framing allowed on top of the three parts


async def _sweep_forever(ctx: Context) -> None:
    """Retention: finished jobs older than JOB_RETENTION go with their files."""
    while True:
        try:
            removed = await asyncio.to_thread(ctx.jobs.sweep, ctx.settings.job_retention, ctx.blobs)
            if removed:
                log.info("retention sweep removed %d job(s)", len(removed))
        except (RedisError, OSError):
            log.exception("retention sweep failed; retrying in %d s", ctx.settings.sweep_interval)
        await asyncio.sleep(ctx.settings.sweep_interval)


async def _recover_forever(ctx: Context) -> None:
    """Jobs whose run or message was lost go back to the queue (worker/runtime/recovery.py)."""
    while True:
        try:
            await asyncio.to_thread(recover_lost_jobs, ctx.jobs, ctx.celery, ctx.settings)
        except (RedisError, KombuError, OSError) as exc:
            log.warning("recovery of lost jobs failed (%s); retrying", exc)
        await asyncio.sleep(ctx.settings.job_heartbeat)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.storage_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        settings=settings,
        jobs=JobStore.from_settings(settings),
        blobs=BlobStore(settings.storage_dir),
        celery=make_celery(settings),
        tokens=load_tokens(settings),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loops = [asyncio.create_task(_sweep_forever(ctx)), asyncio.create_task(_recover_forever(ctx))]
        yield
        for loop in loops:
            loop.cancel()

    app = FastAPI(
        title="tvmq",
        summary="int8 post-training quantization and compilation of ONNX models with Apache TVM",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.context = ctx
    install_handlers(app)
    protected = [Depends(caller)]
    app.include_router(health.router)
    app.include_router(quantize.router, dependencies=protected)
    app.include_router(jobs.router, dependencies=protected)
    app.include_router(schema.router, dependencies=protected)
    parts = {
        "model": settings.max_model_bytes,
        "calibration": settings.max_calibration_bytes,
        "qconfig": settings.max_qconfig_bytes,
    }
    limit = sum(parts.values()) + MULTIPART_OVERHEAD
    app.add_middleware(
        BodyLimit, path="/quantize", limit=limit, parts=parts, other=settings.max_qconfig_bytes
    )
    # Added last, so it runs first: no body is read before the token and the rate limit pass.
    app.add_middleware(
        Gate,
        tokens=ctx.tokens,
        client=ctx.jobs.redis,
        prefix=settings.redis_prefix,
        limit=settings.rate_limit,
        window=settings.rate_limit_window,
    )
    return app
