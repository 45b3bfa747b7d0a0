"""The client half of scripts/compose-smoke: what a user does against the deployed stack.

Builds a tiny conv → relu → conv → relu → GlobalAveragePool model and its calibration set, submits
them through `POST /quantize`, follows the job to the end, downloads the artifact and runs it here
with TVM, checking it against ONNX Runtime on the float model. Exit status 0 only when all of that
worked; otherwise the last line says which step failed and why.
Run with the project's venv: `.venv/bin/python tests/docker/smoke_client.py --url http://127.0.0.1:8000`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT = "x"
SHAPE = (1, 3, 16, 16)
QCONFIG = {"calibrate_mode": "max", "weight_scale": "max", "skip_conv_layers": [], "bench_runs": 3}
MIN_COSINE = 0.95  # int8 against float on this model; a broken requantization lands far below


class SmokeError(Exception):
    """A step of the smoke run failed; the message names the step."""


def build_model(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", [INPUT, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "smoke",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4, 1, 1))],
        initializer=[w1, b1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def build_calibration(path: Path, samples: int = 16, seed: int = 1) -> None:
    data = np.random.default_rng(seed).normal(0, 1, (samples, *SHAPE[1:])).astype(np.float32)
    np.savez(path, **{INPUT: data})


def submit(client: httpx.Client, model: Path, calibration: Path) -> str:
    with model.open("rb") as m, calibration.open("rb") as c:
        response = client.post(
            "/quantize",
            files={"model": (model.name, m), "calibration": (calibration.name, c)},
            data={"qconfig": json.dumps(QCONFIG)},
        )
    if response.status_code != 202:
        raise SmokeError(f"POST /quantize answered {response.status_code}: {response.text}")
    return response.json()["job_id"]


def wait_for_job(client: httpx.Client, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").raise_for_status().json()
        where = (job["state"], job["stage"], job["progress"])
        if where != seen:
            print(f"smoke: job {job_id}: {job['state']} {job['stage'] or ''} {job['progress']}%", flush=True)
            seen = where
        if job["state"] == "succeeded":
            return job
        if job["state"] in ("failed", "cancelled"):
            error = job.get("error") or {}
            raise SmokeError(f"job {job['state']}: {error.get('code')}: {error.get('message')}")
        time.sleep(1.0)
    raise SmokeError(f"job {job_id} did not finish within {timeout:.0f} s (last: {seen})")


def check_artifact(artifact: Path, model: Path, calibration: Path) -> float:
    """Runs the artifact on one calibration sample and returns its cosine similarity to the float
    model under ONNX Runtime."""
    import onnxruntime
    import tvm
    from tvm import relax

    sample = np.load(calibration, allow_pickle=False)[INPUT][:1]
    expected = onnxruntime.InferenceSession(str(model)).run(None, {INPUT: sample})[0]
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact)), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(sample))
    got = np.asarray(got.numpy() if hasattr(got, "numpy") else got[0].numpy(), dtype=np.float32)
    if got.shape != expected.shape:
        raise SmokeError(f"artifact output shape {got.shape}, the float model gives {expected.shape}")
    a, b = got.ravel().astype(np.float64), expected.ravel().astype(np.float64)
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    if not cosine >= MIN_COSINE:
        raise SmokeError(f"artifact output is off: cosine {cosine:.4f} < {MIN_COSINE} against ONNX Runtime")
    return cosine


def run(url: str, workdir: Path, timeout: float) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    model, calibration, artifact = workdir / "model.onnx", workdir / "calibration.npz", workdir / "model.so"
    build_model(model)
    build_calibration(calibration)
    with httpx.Client(base_url=url, timeout=30) as client:
        ready = client.get("/readyz")
        print(f"smoke: /readyz {ready.status_code} {ready.text}", flush=True)
        start = time.monotonic()
        job_id = submit(client, model, calibration)
        (workdir / "job_id").write_text(job_id)
        print(f"smoke: submitted job {job_id}", flush=True)
        job = wait_for_job(client, job_id, timeout)
        print(f"smoke: submit to job done: {time.monotonic() - start:.1f} s", flush=True)
        response = client.get(job["links"]["artifact"])
        if response.status_code != 200:
            raise SmokeError(f"GET artifact answered {response.status_code}: {response.text}")
        artifact.write_bytes(response.content)
    cosine = check_artifact(artifact, model, calibration)
    print(f"smoke: artifact ({artifact.stat().st_size} bytes) runs here; cosine to float {cosine:.4f}")


def recheck(url: str, workdir: Path) -> None:
    """The job of the last run is still there and succeeded (after a Redis restart, say)."""
    job_id = (workdir / "job_id").read_text().strip()
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.get(f"/jobs/{job_id}")
    state = response.json().get("state") if response.status_code == 200 else None
    if state != "succeeded":
        raise SmokeError(f"job {job_id} after the restart: HTTP {response.status_code} {response.text}")
    print(f"smoke: job {job_id} is still {state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of the deployed API")
    parser.add_argument("--workdir", type=Path, default=Path("build/compose-smoke"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds the job may take")
    parser.add_argument("--recheck", action="store_true", help="only check the last run's job again")
    args = parser.parse_args(argv)
    try:
        if args.recheck:
            recheck(args.url.rstrip("/"), args.workdir)
        else:
            run(args.url.rstrip("/"), args.workdir, args.timeout)
    except (SmokeError, httpx.HTTPError, OSError) as exc:
        print(f"smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
