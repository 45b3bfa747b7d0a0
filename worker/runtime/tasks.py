"""The quantize job as a Celery task: claim the job record, run the pipeline, record the outcome.

`app` is the worker's Celery app (`celery -A worker.runtime.tasks worker`, `tvmq worker`).

Idempotent by construction: the record is claimed atomically (a finished or cancelled job is never
re-run), each run has an attempt number, and every write is conditional on that attempt still being
the current one, so a stale or re-delivered run cannot overwrite a finished record. What the worker's
main process sees and the job's process cannot (the hard time limit's kill, a lost pool process) is
recorded by `JobRequest`. Importing this module is TVM-free; the pipeline is imported when a job runs.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import resource
import signal
from functools import cache
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery, Task
from celery.signals import worker_process_init
from celery.worker.request import Request
from redis.exceptions import RedisError

from worker.errors import QuantizeError
from worker.qconfig import parse_qconfig
from worker.runtime.celery_app import TASK_NAME, make_celery
from worker.runtime.jobs import MEMORY_CODE, TIMEOUT_CODE, Job, JobStore
from worker.runtime.settings import Settings, get_settings
from worker.runtime.stack import die_with_parent
from worker.runtime.storage import BlobStore
from worker.runtime.watch import (
    STOP_SIGNAL,
    JobCancelled,
    JobTimeLimit,
    StoreUnreachable,
    keep_control_flow_through_tvm,
    watched_run,
)

log = logging.getLogger(__name__)

#: The per-job memory cap: private writable memory (heap and anonymous maps), which is what a big
#: model's tensors take; address space (RLIMIT_AS) would also count reservations that use nothing.
MEMORY_RLIMIT = resource.RLIMIT_DATA


@cache
def _main_process_store(app: Celery) -> JobStore:
    """The worker's main process runs Celery's event loop: its writes must not wait on Redis long."""
    return JobStore.from_settings(app.tvmq_settings, retry_for=2.0)


@cache
def _stores(app: Celery) -> tuple[JobStore, BlobStore]:
    settings = app.tvmq_settings
    # A run rides out a Redis restart of about a lease; past that it is abandoned and recovered.
    return JobStore.from_settings(settings, retry_for=settings.job_lease / 2), BlobStore(settings.storage_dir)


def quantize_task(task: Task, job_id: str, dispatch: int = 1) -> dict[str, Any]:
    jobs, blobs = _stores(task.app)
    return execute_job(job_id, jobs, blobs, task.app.tvmq_settings, dispatch)


def execute_job(
    job_id: str, jobs: JobStore, blobs: BlobStore, settings: Settings, dispatch: int = 1
) -> dict[str, Any]:
    attempt = jobs.start(job_id, dispatch)
    if attempt is None:
        log.info("job %s is finished, cancelled, gone or re-sent: not running this message", job_id)
        return {"job_id": job_id, "ran": False}
    job = jobs.get(job_id)

    def beat() -> bool:
        return jobs.heartbeat(job_id, attempt)

    try:
        with watched_run(beat, settings.job_soft_time_limit, settings.job_heartbeat) as watch:

            def progress(stage: str, percent: int, trial: dict[str, Any] | None = None) -> None:
                watch.check()
                try:
                    current = jobs.progress(job_id, attempt, stage, int(percent), trial)
                except RedisError as exc:
                    raise StoreUnreachable(str(exc)) from None
                if not current:
                    raise JobCancelled(job_id)

            outcome = _run_pipeline(job_id, job, blobs, progress)
    except JobTimeLimit as exc:
        outcome = _failed(TIMEOUT_CODE, exc.message)
    except JobCancelled:
        outcome = {}
    except StoreUnreachable as exc:
        log.warning("job %s: the job store is unreachable (%s); abandoning this run", job_id, exc)
        return {"job_id": job_id, "ran": True, "recorded": False}
    try:
        recorded = bool(outcome) and jobs.finish(job_id, attempt, **outcome)
        if not recorded:
            current = jobs.get(job_id)
            if current is None or current.state == "cancelled":
                blobs.delete(job_id)
    except RedisError as exc:
        log.warning("job %s: could not record its outcome (%s); it will be recovered", job_id, exc)
        recorded = False
    return {"job_id": job_id, "ran": True, "recorded": recorded, **outcome}


def _run_pipeline(job_id: str, job: Job, blobs: BlobStore, progress: Any) -> dict[str, Any]:
    """The outcome of one pipeline run; a JobStopped goes through to the caller."""
    try:
        keep_control_flow_through_tvm()
        from worker.pipeline import run_pipeline  # preloaded in a pool process

        run_pipeline(
            blobs.model_path(job_id),
            blobs.calibration_path(job_id) if job.has_calibration else None,
            parse_qconfig(job.qconfig),
            blobs.fresh_output_dir(job_id),
            progress,
            validation_path=blobs.validation_path(job_id) if job.has_validation else None,
            model_name=job.model_name or None,
        )
        if not blobs.artifact_path(job_id).is_file():
            return _failed("E_INTERNAL", "the pipeline finished without writing model.so; please report it")
    except Exception as exc:
        if _out_of_memory(exc):
            limit = resource.getrlimit(MEMORY_RLIMIT)[0]
            cap = "no limit" if limit == resource.RLIM_INFINITY else f"{limit} bytes"
            return _failed(
                MEMORY_CODE,
                f"the job ran out of memory (JOB_MEMORY_LIMIT: {cap}); try a smaller model or input "
                "shapes, or raise the limit",
            )
        if isinstance(exc, QuantizeError):
            return _failed(exc.code, exc.message)
        log.exception("job %s: unexpected error", job_id)
        return _failed(
            "E_INTERNAL",
            f"internal error ({type(exc).__name__}: {exc}); please report it with job id {job_id}",
        )
    return {"state": "succeeded"}


def _out_of_memory(exc: BaseException | None) -> bool:
    """A failed allocation, from Python (MemoryError) or from C++ (TVM passes std::bad_alloc on
    as a RuntimeError), also when a fallback wrapped it in another error."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError) or "std::bad_alloc" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _failed(code: str, message: str) -> dict[str, Any]:
    return {"state": "failed", "code": code, "message": message}


class JobRequest(Request):
    """The worker's main process's side of a job: it alone sees the hard limit kill the job's
    process and a pool process die, and records them (the job's own process cannot)."""

    def _job(self) -> tuple[str, int]:
        args = list(self.args or ())
        return str(args[0]), int(args[1]) if len(args) > 1 else 1

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft:
            return
        job_id, dispatch = self._job()
        message = (
            f"the job ran past its hard time limit (JOB_TIME_LIMIT={timeout:g} s) and its process was "
            "killed; try a smaller model or less calibration data"
        )
        try:
            _main_process_store(self.task.app).fail_dispatch(job_id, dispatch, TIMEOUT_CODE, message)
        except RedisError:
            log.exception("job %s: could not record the hard time limit; recovery will", job_id)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        if isinstance(exc, WorkerLostError):
            job_id, _ = self._job()
            try:
                _main_process_store(self.task.app).note_loss(job_id, str(exc).split(" Job:")[0].strip())
            except RedisError:
                log.exception("job %s: could not record the loss of its worker", job_id)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


#: Imported lazily by the pipeline, so imported up front by every pool process (see below).
LAZY_IMPORTS = ("tvm", "tvm.relax.frontend.onnx", "onnxslim", "onnx.reference")


def preload_pipeline() -> None:
    """Import the whole pipeline before any job runs: a JobStopped raised in the middle of an
    import (TVM's takes seconds) would leave half-initialised modules that break every later job of
    the process; it also takes TVM's import out of each job's time."""
    import worker

    skip = ("worker.runtime", "worker.cli")
    for module in pkgutil.walk_packages(worker.__path__, "worker."):
        if not module.name.startswith(skip):
            importlib.import_module(module.name)
    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    keep_control_flow_through_tvm()


@worker_process_init.connect
def _prepare_pool_process(**_: Any) -> None:
    """Every pool process: dies with its worker, ignores the stop signal between jobs, is held to
    the memory cap and has the pipeline imported before its first job."""
    die_with_parent()
    signal.signal(STOP_SIGNAL, signal.SIG_IGN)
    limit = get_settings().job_memory_limit
    if limit:
        resource.setrlimit(MEMORY_RLIMIT, (limit, limit))
    preload_pipeline()


def make_worker_app(settings: Settings) -> Celery:
    """A Celery app that runs the quantize task (the API's app only sends it)."""
    app = make_celery(settings)
    app.task(name=TASK_NAME, bind=True, Request=JobRequest)(quantize_task)
    return app


app = make_worker_app(get_settings())
