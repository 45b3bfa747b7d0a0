"""Recovery: send again every job whose run or message was lost (see JobStore.lost_jobs).

A run is lost with its worker (a killed container, a SIGKILLed `tvmq worker`), or with its job store
past the retries; a message is lost in a Redis restart that drops the last writes, or with a worker
that dies between receiving it and starting it. Redis itself would re-deliver an unacknowledged
message only after VISIBILITY_TIMEOUT (longer than the hard time limit, 40 minutes by default);
the heartbeats let us do it within JOB_LEASE. The API runs this every JOB_HEARTBEAT seconds; any
number of processes may run it at once (each step is one atomic script).
"""

from __future__ import annotations

import logging

from celery import Celery

from worker.runtime.celery_app import TASK_NAME
from worker.runtime.jobs import JobStore, queued_task_ids
from worker.runtime.settings import Settings

log = logging.getLogger(__name__)


def send_job(celery: Celery, settings: Settings, job_id: str, dispatch: int) -> None:
    celery.send_task(TASK_NAME, args=[job_id, dispatch], task_id=job_id, queue=settings.celery_queue)


def recover_lost_jobs(jobs: JobStore, celery: Celery, settings: Settings) -> list[str]:
    """Re-queue the lost jobs; their ids."""
    waiting = queued_task_ids(jobs.redis, settings.celery_queue, held_for=settings.job_lease)
    requeued = jobs.lost_jobs(waiting)
    for job_id, dispatch in requeued:
        log.warning("job %s was lost (no heartbeat for %.0f s): sending it again", job_id, settings.job_lease)
        send_job(celery, settings, job_id, dispatch)
    return [job_id for job_id, _ in requeued]
