"""End to end through HTTP with a real Celery worker on the real Redis and the real pipeline:
submit, poll to `succeeded`, download, load the artifact with TVM and run it; a model TVM cannot
import ends `failed` with its code; a running job can be cancelled."""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from fastapi.testclient import TestClient
from svc_helpers import (
    calibration_samples,
    conv4d_model_bytes,
    conv_model_bytes,
    npz_bytes,
    submission,
    wait_for,
)

from worker.pipeline import STAGES
from worker.runtime.celery_app import make_celery
from worker.runtime.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# skip_conv_layers=[] so that the only conv is really quantized (Relay's default keeps conv 0 float).
QCONFIG = json.dumps({"calibrate_mode": "max", "skip_conv_layers": [], "bench_runs": 3})


def _run_artifact(path: Path, sample: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(sample))
    return (out[0] if isinstance(out, tvm.ir.Array | tuple | list) else out).numpy()


def test_quantize_end_to_end(live: tuple[TestClient, Settings], tmp_path: Path) -> None:
    client, _ = live
    samples = calibration_samples(8)
    response = client.post("/quantize", **submission(conv_model_bytes(), npz_bytes(x=samples), QCONFIG))
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    seen = set()
    deadline = time.monotonic() + 900
    while (job := client.get(f"/jobs/{job_id}").json())["state"] in ("queued", "running"):
        seen.add((job["stage"], job["progress"]))
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["state"] == "succeeded", job
    assert job["progress"] == 100 and job["error"] is None and job["started_at"] and job["finished_at"]
    # each progress value lies within its stage's span (long stages report progress inside it)
    spans = {name: (start, end) for (name, start), (_, end) in pairwise(STAGES)}
    assert all(spans[stage][0] <= percent <= spans[stage][1] for stage, percent in seen if stage in spans), (
        seen
    )
    assert {stage for stage, _ in seen} - {"queued"} <= set(spans) | {"done"}, seen

    artifact = tmp_path / "model.so"
    download = client.get(job["links"]["artifact"])
    assert download.status_code == 200 and download.headers["content-type"] == "application/octet-stream"
    artifact.write_bytes(download.content)

    sample = samples[:1]
    expected = onnxruntime.InferenceSession(conv_model_bytes()).run(None, {"x": sample})[0]
    got = _run_artifact(artifact, sample)
    assert got.shape == expected.shape
    cosine = float(np.dot(got.ravel(), expected.ravel()) / (np.linalg.norm(got) * np.linalg.norm(expected)))
    assert cosine > 0.9, (got.ravel(), expected.ravel())

    report = client.get(job["links"]["report"])
    assert report.status_code == 200 and isinstance(report.json(), dict)
    page = client.get(job["links"]["report_html"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")

    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers"]


def test_a_model_tvm_cannot_import_fails_with_its_code(live: tuple[TestClient, Settings]) -> None:
    client, _ = live
    response = client.post("/quantize", **submission(conv4d_model_bytes(), qconfig='{"preset": "relay"}'))
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["job_id"], {"succeeded", "failed", "cancelled"})
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "E_IMPORT", job["error"]
    assert job["error"]["message"]
    missing = client.get(f"/jobs/{job['id']}/artifact")
    assert missing.status_code == 404 and missing.json()["code"] == "E_NO_RESULT"


def test_cancel_a_running_job(live: tuple[TestClient, Settings]) -> None:
    client, settings = live
    response = client.post(
        "/quantize", **submission(conv_model_bytes(), npz_bytes(x=calibration_samples()), QCONFIG)
    )
    job_id = response.json()["job_id"]
    wait_for(client, job_id, {"running", "succeeded", "failed"})
    cancelled = client.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200, "the job finished before it could be cancelled while running"
    assert cancelled.json()["state"] == "cancelled"

    # The solo-pool worker answers `inspect` only between tasks: once it answers without our job,
    # the cancelled run has stopped at its next stage boundary and cleaned up.
    inspect = make_celery(settings).control.inspect(timeout=1.0)
    deadline = time.monotonic() + 900
    while True:
        active = inspect.active()
        if active is not None and all(t["id"] != job_id for tasks in active.values() for t in tasks):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "cancelled" and job["links"]["artifact"] is None
    assert not (settings.storage_dir / "jobs" / job_id).exists()
