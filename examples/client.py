"""Submit a model to a running tvmq service, follow its progress, download the artifact and run it.

    .venv/bin/python examples/client.py                       # the bundled examples/cnn model
    .venv/bin/python examples/client.py --url http://host:8000 --model m.onnx -c calib.npz -q qconfig.json

Set API_TOKEN in the environment if the service requires one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "cnn"


def submit(client: httpx.Client, model: Path, calibration: Path | None, qconfig: Path | None) -> str:
    files = {"model": (model.name, model.read_bytes(), "application/octet-stream")}
    if calibration:
        files["calibration"] = (calibration.name, calibration.read_bytes(), "application/octet-stream")
    data = {"qconfig": qconfig.read_text()} if qconfig else {}
    response = client.post("/quantize", files=files, data=data)
    if response.status_code != 202:
        problem = response.json()
        sys.exit(f"rejected ({response.status_code}) {problem['code']}: {problem['message']}")
    return response.json()["job_id"]


def follow(client: httpx.Client, job_id: str) -> dict:
    """Poll until the job finishes, drawing a one-line progress bar on stderr."""
    start = time.monotonic()
    while True:
        job = client.get(f"/jobs/{job_id}").raise_for_status().json()
        filled = job["progress"] * 30 // 100
        bar = "#" * filled + "." * (30 - filled)
        elapsed = time.monotonic() - start
        line = f"\r[{bar}] {job['progress']:3d}% {job['state']:<9} {job['stage'] or '':<12} {elapsed:6.1f}s"
        print(line, end="", file=sys.stderr, flush=True)
        if job["state"] not in ("queued", "running"):
            print(file=sys.stderr)
            return job
        time.sleep(0.5)


def run_artifact(path: Path, calibration: Path | None, model: Path) -> None:
    """Load the .so with TVM and run one sample (from the calibration data, else random)."""
    import onnx
    import tvm
    from tvm import relax

    graph = onnx.load(str(model), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    rng = np.random.default_rng(0)
    arrays = np.load(calibration, allow_pickle=False) if calibration else None
    args = []
    for value in inputs:
        if arrays is not None:
            sample = arrays[value.name][:1]
        else:
            shape = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
            sample = rng.standard_normal(shape, dtype=np.float32)
        args.append(tvm.runtime.tensor(np.ascontiguousarray(sample)))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    out = vm["main"](*args)
    outputs = list(out) if isinstance(out, tvm.ir.Array | tuple | list) else [out]
    for i, tensor in enumerate(outputs):
        array = tensor.numpy()
        print(f"output {i}: shape {array.shape} dtype {array.dtype} first values {array.ravel()[:5]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TVMQ_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--model", type=Path, default=EXAMPLE / "model.onnx")
    parser.add_argument("--calibration", "-c", type=Path, default=EXAMPLE / "calibration.npz")
    parser.add_argument("--qconfig", "-q", type=Path, default=EXAMPLE / "qconfig.json")
    parser.add_argument("--out", "-o", type=Path, help="where to save the artifact (default: a temp dir)")
    args = parser.parse_args()
    calibration = args.calibration if args.calibration and args.calibration.exists() else None
    qconfig = args.qconfig if args.qconfig and args.qconfig.exists() else None

    token = os.environ.get("API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=60) as client:
        job_id = submit(client, args.model, calibration, qconfig)
        print(f"job {job_id} submitted", file=sys.stderr)
        job = follow(client, job_id)
        if job["state"] != "succeeded":
            error = job["error"] or {"code": job["state"], "message": ""}
            print(f"job {job['state']}: {error['code']}: {error['message']}", file=sys.stderr)
            return 1
        out_dir = args.out or Path(tempfile.mkdtemp(prefix="tvmq-"))
        out_dir.mkdir(parents=True, exist_ok=True)
        artifact = out_dir / "model.so"
        artifact.write_bytes(client.get(job["links"]["artifact"]).raise_for_status().content)
        report = client.get(job["links"]["report"]).raise_for_status().json()
        print(f"artifact: {artifact}\nreport summary: {report.get('summary', {})}")
        print(f"report page: {job['links']['report_html']}")
    run_artifact(artifact, calibration, args.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
