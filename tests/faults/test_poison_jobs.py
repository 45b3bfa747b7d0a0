"""A job that keeps killing its worker is failed after MAX_DELIVERIES runs, naming them, and a job
past the memory cap fails with its own code; other jobs go on. Before: every worker death re-queued
the job, without end (3 kills, 4 deliveries), and an out-of-memory model was E_INTERNAL or a lost
worker."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from processes import finished, wait_job
from svc_helpers import calibration_samples, conv_model_bytes, npz_bytes, submission

pytestmark = [pytest.mark.slow, pytest.mark.redis]

QCONFIG = '{"calibrate_mode": "max", "bench_runs": 2}'
POOL_START = 180.0
GIB = 1 << 30


def _submit(api, model: bytes, calibration: bytes | None = None, qconfig: str | None = QCONFIG) -> str:
    response = api.post("/quantize", **submission(model, calibration, qconfig))
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def test_a_job_whose_worker_keeps_dying_fails_after_max_deliveries(fault_stack) -> None:
    stack = fault_stack(workers=2, max_deliveries=2, job_lease=30.0)
    calibration = npz_bytes(x=calibration_samples())
    poison = _submit(stack.api, conv_model_bytes(), calibration)
    for attempt in (1, 2):
        wait_job(
            stack.api,
            poison,
            lambda j, a=attempt: j["state"] == "running" and j["attempts"] == a,
            f"run {attempt} starts",
            POOL_START,
        )
        job = stack.api.get(f"/jobs/{poison}").json()
        os.kill(int(job["worker"].rpartition(":")[2]), signal.SIGKILL)
    healthy = _submit(stack.api, conv_model_bytes(), calibration)

    job = wait_job(stack.api, poison, finished, "the poison job is failed", POOL_START)
    assert job["state"] == "failed" and job["error"]["code"] == "E_WORKER_LOST", job
    assert "started 2 times" in job["error"]["message"] and "SIGKILL" in job["error"]["message"], job
    assert job["attempts"] == 2
    other = wait_job(stack.api, healthy, finished, "the other job runs", POOL_START)
    assert other["state"] == "succeeded", (other, stack.worker_logs())


def _big_output_model() -> bytes:
    """x[1, 1] expanded to a 16000 x 16000 float output: 1 GiB to run, almost nothing to build."""
    shape = numpy_helper.from_array(np.array([16000, 16000], dtype=np.int64), "shape")
    nodes = [helper.make_node("Expand", ["x", "shape"], ["e"]), helper.make_node("Relu", ["e"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 1))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (16000, 16000))],
        initializer=[shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_job_past_the_memory_cap_fails_with_its_code_and_the_next_one_runs(fault_stack) -> None:
    stack = fault_stack(workers=1, job_memory_limit=GIB, job_lease=30.0)
    big = _submit(
        stack.api, _big_output_model(), qconfig='{"calibrate_mode": "global_scale", "bench_runs": 2}'
    )
    job = wait_job(stack.api, big, finished, "the big job ends", POOL_START)
    assert job["state"] == "failed" and job["error"]["code"] == "E_OUT_OF_MEMORY", (job, stack.worker_logs())
    assert str(GIB) in job["error"]["message"]

    small = _submit(stack.api, conv_model_bytes(), npz_bytes(x=calibration_samples()))
    job = wait_job(stack.api, small, finished, "the next job runs", POOL_START)
    assert job["state"] == "succeeded", (job, stack.worker_logs())
