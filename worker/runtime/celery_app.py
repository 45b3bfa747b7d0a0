"""The Celery app's configuration, from Settings; the task itself is registered by worker.runtime.tasks.

The delivery settings are what make a job run exactly once in practice: the message is acknowledged
only after the task returns (acks_late), a worker that dies mid-job gives it back
(reject_on_worker_lost), each worker holds one job at a time (prefetch 1), and Redis waits longer
than the hard time limit before re-delivering an unacknowledged job. The API sends TASK_NAME by name
through an app from `make_celery`, so it never imports the task module (nor the job it runs).
"""

from __future__ import annotations

from celery import Celery

from worker.runtime.settings import Settings

TASK_NAME = "tvmq.quantize"


def make_celery(settings: Settings) -> Celery:
    app = Celery("tvmq", broker=settings.redis_url, backend=settings.redis_url)
    transport = {"visibility_timeout": settings.visibility_timeout}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.celery_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        result_expires=settings.result_expires,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
    )
    app.tvmq_settings = settings
    return app
