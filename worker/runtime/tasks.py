"""The quantize job as a Celery task: claim the job record, run the pipeline, record the outcome.

`app` is the worker's Celery app (`celery -A worker.runtime.tasks worker`, `tvmq worker`).

Idempotent by construction: the record is claimed atomically (a finished or cancelled job is never
re-run), each run has an attempt number, and every write is conditional on that attempt still being
the current one, so a stale or re-delivered run cannot overwrite a finished record. Importing this
module is TVM-free; the pipeline is imported when a job runs.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded

from worker.errors import QuantizeError
from worker.qconfig import parse_qconfig
from worker.runtime.celery_app import TASK_NAME, make_celery
from worker.runtime.jobs import TIMEOUT_CODE, JobStore
from worker.runtime.settings import Settings, get_settings
from worker.runtime.storage import BlobStore

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised from the progress callback: the job was cancelled (or superseded) while running."""


@cache
def _stores(app: Celery) -> tuple[JobStore, BlobStore]:
    settings = app.tvmq_settings
    return JobStore.from_settings(settings), BlobStore(settings.storage_dir)


def quantize_task(task: Task, job_id: str) -> dict[str, Any]:
    jobs, blobs = _stores(task.app)
    return execute_job(job_id, jobs, blobs)


def execute_job(job_id: str, jobs: JobStore, blobs: BlobStore) -> dict[str, Any]:
    attempt = jobs.start(job_id)
    if attempt is None:
        log.info("job %s is finished, cancelled or gone: not running it again", job_id)
        return {"job_id": job_id, "ran": False}
    job = jobs.get(job_id)

    def progress(stage: str, percent: int) -> None:
        if not jobs.progress(job_id, attempt, stage, int(percent)):
            raise JobCancelled(job_id)

    outcome: dict[str, Any] = {"state": "succeeded"}
    try:
        keep_control_flow_through_tvm()
        from worker.pipeline import run_pipeline

        run_pipeline(
            blobs.model_path(job_id),
            blobs.calibration_path(job_id) if job.has_calibration else None,
            parse_qconfig(job.qconfig),
            blobs.fresh_output_dir(job_id),
            progress,
        )
        if not blobs.artifact_path(job_id).is_file():
            outcome = _failed(
                "E_INTERNAL", "the pipeline finished without writing model.so; please report it"
            )
    except JobCancelled:
        outcome = {}
    except QuantizeError as exc:
        outcome = _failed(exc.code, exc.message)
    except SoftTimeLimitExceeded:
        outcome = _failed(
            TIMEOUT_CODE,
            "the job ran past its time limit (JOB_SOFT_TIME_LIMIT); try a smaller "
            "model or less calibration data",
        )
    except Exception as exc:
        log.exception("job %s: unexpected error", job_id)
        outcome = _failed(
            "E_INTERNAL",
            f"internal error ({type(exc).__name__}: {exc}); please report it with job id {job_id}",
        )
    recorded = bool(outcome) and jobs.finish(job_id, attempt, **outcome)
    if not recorded:
        current = jobs.get(job_id)
        if current is None or current.state == "cancelled":
            blobs.delete(job_id)
    return {"job_id": job_id, "ran": True, "recorded": recorded, **outcome}


def keep_control_flow_through_tvm() -> None:
    """A soft time limit or a cancellation raised while TVM is calling back into Python leaves TVM's
    FFI as a RuntimeError unless its class is registered there; registered, it stays itself, so the
    pipeline's build fallbacks (which catch RuntimeError) cannot mistake it for a TVM failure."""
    import tvm_ffi

    for cls in (SoftTimeLimitExceeded, JobCancelled):
        tvm_ffi.register_error(cls)


def _failed(code: str, message: str) -> dict[str, Any]:
    return {"state": "failed", "code": code, "message": message}


def make_worker_app(settings: Settings) -> Celery:
    """A Celery app that runs the quantize task (the API's app only sends it)."""
    app = make_celery(settings)
    app.task(name=TASK_NAME, bind=True)(quantize_task)
    return app


app = make_worker_app(get_settings())
