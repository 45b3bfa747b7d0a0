"""A Redis restart while jobs run: every job ends (succeeded, or failed with a code), promptly,
and none is skipped. Before the fix the running jobs were terminated by the worker ("cannot be
acknowledged after a connection loss"), stayed `running` and were skipped when Redis re-delivered
them 40 minutes later."""

from __future__ import annotations

import time

import pytest
from svc_helpers import calibration_samples, conv_model_bytes, npz_bytes, submission

pytestmark = [pytest.mark.slow, pytest.mark.redis]

QCONFIG = '{"calibrate_mode": "max", "bench_runs": 2}'
BOUND = 180.0  # seconds for the whole scenario on a loaded 2-core machine


def _submit(api) -> str:
    response = api.post(
        "/quantize", **submission(conv_model_bytes(), npz_bytes(x=calibration_samples()), QCONFIG)
    )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def _states(api, ids: list[str]) -> dict[str, dict]:
    return {job_id: api.get(f"/jobs/{job_id}").json() for job_id in ids}


def _wait_all_finished(api, ids: list[str], deadline: float) -> dict[str, dict]:
    while True:
        jobs = _states(api, ids)
        if all(j["state"] not in ("queued", "running") for j in jobs.values()):
            return jobs
        assert time.monotonic() < deadline, {k: (j["state"], j["stage"]) for k, j in jobs.items()}
        time.sleep(0.5)


def test_jobs_running_through_a_redis_restart_finish(fault_stack) -> None:
    stack = fault_stack(workers=2)
    deadline = time.monotonic() + BOUND
    ids = [_submit(stack.api) for _ in range(3)]
    while sum(j["state"] == "running" for j in _states(stack.api, ids).values()) < 2:
        assert time.monotonic() < deadline, stack.worker_logs()
        time.sleep(0.2)

    stack.redis.restart(down_for=3.0)

    jobs = _wait_all_finished(stack.api, ids, deadline)
    assert all(j["state"] == "succeeded" for j in jobs.values()), (jobs, stack.worker_logs())
    runs = [
        int(
            stack.api.app.state.context.jobs.redis.hget(
                f"{stack.settings.redis_prefix}:job:{i}", "completed_runs"
            )
            or 0
        )
        for i in ids
    ]
    assert runs == [1, 1, 1], runs
