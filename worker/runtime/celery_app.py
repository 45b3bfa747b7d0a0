"""The Celery app's configuration, from Settings; the task itself is registered by worker.runtime.tasks.

The delivery settings are what make a job run exactly once in practice: the message is acknowledged
only after the task returns (acks_late), a worker whose pool process dies mid-job gives it back
(reject_on_worker_lost; the job record bounds how often), each worker holds one job at a time
(prefetch 1), and Redis waits longer than the hard time limit before re-delivering an
unacknowledged job (the job records' heartbeats find lost jobs long before that: see jobs.py).
A job keeps running through a lost broker connection (its record writes retry), rather than being
terminated as Celery does by default, since the record, not the message, says whether it is done.
The soft time limit is not Celery's: the job's watcher enforces it (worker/runtime/watch.py).
The API sends TASK_NAME by name through an app from `make_celery`, so it never imports the task
module (nor the job it runs).
"""

from __future__ import annotations

from celery import Celery

from worker.runtime.settings import Settings

TASK_NAME = "tvmq.quantize"
PROCESS_START_TIMEOUT = 180.0  # seconds


def make_celery(settings: Settings) -> Celery:
    # No result backend: the job records are the results (a backend write is one more thing a
    # Redis restart can fail in the middle of a job).
    app = Celery("tvmq", broker=settings.redis_url)
    transport = {"visibility_timeout": settings.visibility_timeout}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.celery_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.job_time_limit,
        broker_transport_options=transport,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        # A pool process imports the whole pipeline (TVM) before it reports for work.
        worker_proc_alive_timeout=PROCESS_START_TIMEOUT,
    )
    app.tvmq_settings = settings
    return app
