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


def test_cli_refuses_unsupported_ops_before_importing_tvm(tmp_path):
    """E_UNSUPPORTED_OP with every op and its count comes from the load stage: TVM (seconds to import)
    is never loaded for a model nothing can convert."""
    model = models.small_mlp()
    for node in model.graph.node[:2]:
        node.op_type, node.domain = "Frobnicate", "com.example"
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    onnx.save(model, tmp_path / "m.onnx")
    code = (
        "import sys\n"
        "from worker.cli import main\n"
        "rc = main(['quantize', 'm.onnx'])\n"
        "assert not [m for m in sys.modules if m == 'tvm' or m.startswith('tvm.')], 'TVM was imported'\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error[E_UNSUPPORTED_OP]: TVM's ONNX importer has no converter for Frobnicate (2 nodes)"
    )
