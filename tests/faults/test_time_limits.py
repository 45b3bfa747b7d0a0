"""The soft time limit, the hard time limit and cancellation end a running job, whatever it is
doing, with real `tvmq worker` processes. Before: the soft limit (an Exception) was swallowed by the
pipeline's `except Exception` fallbacks and the job succeeded past it; a job killed by the hard
limit stayed `running` until the API's stale check a minute later; a DELETE terminated the pool
process with SIGTERM, which inside TVM surfaced as "unexpected error"."""

from __future__ import annotations

import os
import signal
import time

import pytest
from processes import finished, wait_job
from svc_helpers import calibration_samples, conv_model_bytes, npz_bytes, submission

pytestmark = [pytest.mark.slow, pytest.mark.redis]

QCONFIG = '{"calibrate_mode": "max", "bench_runs": 2}'
POOL_START = 180.0  # seconds for a pool process to import the pipeline on a loaded machine


def _submit(api) -> str:
    response = api.post(
        "/quantize", **submission(conv_model_bytes(), npz_bytes(x=calibration_samples()), QCONFIG)
    )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def _running(api, job_id: str) -> dict:
    return wait_job(api, job_id, lambda j: j["state"] == "running", "the job starts", POOL_START)


def _seconds(job: dict, a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(job[b]) - datetime.fromisoformat(job[a])).total_seconds()


def test_the_soft_time_limit_fails_the_job_at_the_limit(fault_stack) -> None:
    stack = fault_stack(workers=1, job_soft_time_limit=1, job_time_limit=60, job_lease=20.0)
    job_id = _submit(stack.api)
    _running(stack.api, job_id)
    job = wait_job(stack.api, job_id, finished, "the job ends", 30)
    assert job["state"] == "failed" and job["error"]["code"] == "E_TIMEOUT", (job, stack.worker_logs())
    assert "JOB_SOFT_TIME_LIMIT" in job["error"]["message"]
    # the limit ends it, not the stage it was in (a tiny job takes several seconds here)
    assert _seconds(job, "started_at", "finished_at") < 10, job
    assert "unexpected error" not in stack.worker_logs()


def test_a_job_killed_by_the_hard_limit_is_failed_at_once(fault_stack) -> None:
    stack = fault_stack(workers=1, job_soft_time_limit=2, job_time_limit=4, job_lease=60.0)
    (worker,) = stack.workers
    job_id = _submit(stack.api)
    _running(stack.api, job_id)
    (child,) = worker.pool_children()
    os.kill(child, signal.SIGSTOP)  # deaf to the soft limit: only the hard limit's SIGKILL ends it
    job = wait_job(stack.api, job_id, finished, "the hard limit fails the job", 30)
    assert job["state"] == "failed" and job["error"]["code"] == "E_TIMEOUT", (job, stack.worker_logs())
    assert "JOB_TIME_LIMIT" in job["error"]["message"]
    assert _seconds(job, "started_at", "finished_at") < 15, job  # not the lease (60 s) nor a stale check


def test_cancelling_a_running_job_stops_it_and_the_worker_goes_on(fault_stack) -> None:
    stack = fault_stack(workers=1, job_lease=20.0)
    (worker,) = stack.workers
    job_id = _submit(stack.api)
    _running(stack.api, job_id)
    (child,) = worker.pool_children()
    time.sleep(1.0)  # into the pipeline
    response = stack.api.delete(f"/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"

    following = _submit(stack.api)
    job = wait_job(stack.api, following, finished, "the next job runs", 120)
    assert job["state"] == "succeeded", (job, stack.worker_logs())
    logs = stack.worker_logs()
    assert f"Task tvmq.quantize[{job_id}] succeeded" in logs, logs  # the run ended itself, cleanly
    assert "unexpected error" not in logs and "WorkerLostError" not in logs, logs
    assert worker.pool_children() == [child]  # the same pool process: nothing was killed
    assert stack.api.get(f"/jobs/{job_id}").json()["state"] == "cancelled"
    assert not (stack.settings.storage_dir / "jobs" / job_id).exists()
