"""POST /quantize: validate everything cheap, store the inputs, create the job record, enqueue."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path, PurePath
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from kombu.exceptions import KombuError
from pydantic import BaseModel
from redis.exceptions import RedisError

from service.context import Caller, Context, get_context
from service.problems import ApiError, problem_responses, too_large
from worker.frontend import open_upload
from worker.qconfig import parse_qconfig
from worker.runtime.jobs import new_job_id
from worker.runtime.recovery import send_job

router = APIRouter(tags=["jobs"])
log = logging.getLogger(__name__)


class Submitted(BaseModel):
    job_id: str
    status_url: str


def _save(upload: UploadFile, field: str, limit: int, dest: Path) -> None:
    if upload.size is not None and upload.size > limit:
        raise too_large(field, limit)
    upload.file.seek(0)
    with dest.open("wb") as out:
        shutil.copyfileobj(upload.file, out, length=1024 * 1024)
    if dest.stat().st_size > limit:
        raise too_large(field, limit)


def _discard(ctx: Context, job_id: str) -> None:
    """Undo a submission that was not queued: its files and its record (the client never got the id,
    and a `queued` record with no message behind it would stay queued forever)."""
    ctx.blobs.delete(job_id)
    try:
        ctx.jobs.delete(job_id)
    except RedisError:
        log.warning("job %s was not queued and its record could not be deleted (Redis is down)", job_id)


@router.post(
    "/quantize",
    status_code=202,
    response_model=Submitted,
    summary="Submit an ONNX model for int8 quantization and compilation",
    responses=problem_responses(401, 413, 422, 429, 503),
)
def submit(
    request: Request,
    response: Response,
    ctx: Annotated[Context, Depends(get_context)],
    owner: Caller,
    model: Annotated[UploadFile, File(description="the ONNX model (one self-contained file)")],
    calibration: Annotated[
        UploadFile | None,
        File(
            description=".npz keyed by model input name (samples stacked on axis 0) or by "
            "'<k>/<input name>' (one feed per sample); required unless calibrate_mode is global_scale"
        ),
    ] = None,
    qconfig: Annotated[str | None, Form(description="qconfig JSON (see GET /qconfig/schema)")] = None,
    validation: Annotated[
        UploadFile | None,
        File(
            description=".npz like the calibration data: the samples a search scores and the report "
            "evaluates (default: the held-out calibration samples)"
        ),
    ] = None,
) -> Submitted:
    settings = ctx.settings
    if qconfig is not None and len(qconfig.encode()) > settings.max_qconfig_bytes:
        raise too_large("qconfig", settings.max_qconfig_bytes)
    config = parse_qconfig(qconfig)
    if calibration is not None and not calibration.filename and not calibration.size:
        calibration = None  # an empty optional file part, as some form clients send
    if validation is not None and not validation.filename and not validation.size:
        validation = None

    job_id = new_job_id()
    try:
        ctx.blobs.prepare_inputs(job_id)
        _save(model, "model", settings.max_model_bytes, ctx.blobs.model_path(job_id))
        if calibration is not None:
            _save(
                calibration, "calibration", settings.max_calibration_bytes, ctx.blobs.calibration_path(job_id)
            )
        if validation is not None:
            _save(validation, "validation", settings.max_calibration_bytes, ctx.blobs.validation_path(job_id))
        open_upload(  # the pipeline's own upload contract, TVM-free
            ctx.blobs.model_path(job_id),
            ctx.blobs.calibration_path(job_id) if calibration is not None else None,
            config,
            settings.max_calibration_unpacked_bytes,
            validation_path=ctx.blobs.validation_path(job_id) if validation is not None else None,
        )
        ctx.jobs.create(
            job_id,
            qconfig=config.model_dump_json(exclude_unset=True),
            has_calibration=calibration is not None,
            has_validation=validation is not None,
            model_name=PurePath(model.filename or "model.onnx").name[:200],
            owner=owner or "",
        )
        send_job(ctx.celery, settings, job_id, dispatch=1)
    except (RedisError, KombuError) as exc:
        _discard(ctx, job_id)
        raise ApiError(
            503, "E_UNAVAILABLE", f"the job queue is unreachable ({exc}); try again later"
        ) from None
    except BaseException:
        _discard(ctx, job_id)
        raise
    status_url = str(request.url_for("get_job", job_id=job_id))
    response.headers["Location"] = status_url
    return Submitted(job_id=job_id, status_url=status_url)
