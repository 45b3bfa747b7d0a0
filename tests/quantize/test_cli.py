"""`tvmq quantize`: artifact, report and IR on disk, a progress line per stage, named errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx

import tests.models as models


def _tvmq(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_cli_quantize_writes_artifact_report_and_ir(tmp_path):
    model = models.seed_gap_mul()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", **models.random_calibration(model, 4, 0))
    (tmp_path / "q.json").write_text(json.dumps({"calibrate_mode": "max", "bench_runs": 2}))
    proc = _tvmq("quantize", "m.onnx", "-c", "c.npz", "-q", "q.json", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("model.so", "report.json", "quantized.relax.py", "report.html"):
        assert (tmp_path / "out" / name).is_file(), name
    for stage in ("load", "import", "calibrate", "realize", "build", "verify", "done"):
        assert f"% {stage}" in proc.stderr, (stage, proc.stderr)
    summary = json.loads(proc.stdout)
    assert summary["artifact"].endswith("model.so")


def test_cli_named_errors(tmp_path):
    onnx.save(models.seed_gap_mul(), tmp_path / "m.onnx")
    (tmp_path / "q.json").write_text('{"calibrate_mod": "max"}')
    proc = _tvmq("quantize", "m.onnx", "-q", "q.json", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error[E_QCONFIG]: unknown qconfig key 'calibrate_mod'")
    )
    (tmp_path / "q.json").write_text('{"calibrate_mode": "max"}')
    proc = _tvmq("quantize", "m.onnx", "-q", "q.json", cwd=tmp_path)
    assert proc.returncode == 2 and "error[E_CALIBRATION]" in proc.stderr
