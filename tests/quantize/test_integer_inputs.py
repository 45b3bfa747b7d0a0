"""Integer model inputs (token ids, bytes) pass through unquantized, in their own dtype, end to end."""

from __future__ import annotations

import numpy as np

import tests.models as models
from tests.quantize.conftest import ACCURATE, cosine, quantize, run_artifact, run_onnx
from worker import frontend
from worker.qconfig import QConfig
from worker.quantize.graph import build_graph, labels
from worker.quantize.partition import partition
from worker.quantize.prerequisite import prerequisite_optimize


def test_ops_on_integer_tensors_are_never_quantized():
    model = models.token_embedding()
    shapes = frontend.fixed_input_shapes(model, None)
    graph = build_graph(
        prerequisite_optimize(frontend.import_relax(frontend.simplify(model, shapes), shapes))
    )
    parts = partition(graph, QConfig(**ACCURATE))
    names = labels(graph)
    reasons = {names[n.var]: why for n, why in parts.reasons.items()}
    assert reasons["multiply#0"].startswith("integer tensors (int32")  # multiply opens regions on floats
    assert {names[n.var] for n in parts.quantized} == {"matmul#0", "nn.relu#0", "matmul#1"}


def test_int32_ids_are_calibrated_fed_and_served_in_their_dtype(tmp_path):
    model = models.token_embedding()
    ids = np.random.default_rng(0).integers(0, 16, (10, 16)).astype(np.int32)
    result = quantize(tmp_path, model, {"ids": ids}, calibrate_mode="max", **ACCURATE)
    assert 'R.multiply(ids, R.const(2, "int32"))' in result.relax_script.read_text()
    assert result.report["accuracy"]["samples"] == 2  # the held-out fifth, fed as int32
    calibrated = {t["name"] for t in result.report["calibration"]["tensors"]}
    assert "ids" not in calibrated, "an integer input is never a calibration point"
    x = ids[:1]
    assert cosine(run_artifact(result.artifact, [x])[0], run_onnx(model, {"ids": x})[0]) >= 0.99


def test_per_sample_scalar_and_state_inputs_through_the_pipeline(tmp_path):
    """Calibration, hold-out, per-layer accuracy and the latency run all take the per-sample feeds."""
    model = models.scalar_and_state()
    rng = np.random.default_rng(1)
    feeds = {}
    for k in range(10):
        feeds[f"{k}/x"] = rng.standard_normal((1, 64)).astype(np.float32)
        feeds[f"{k}/state"] = rng.standard_normal((2, 1, 16)).astype(np.float32)
        feeds[f"{k}/sr"] = np.array(8000 if k % 2 else 16000, np.int64)
    result = quantize(tmp_path, model, feeds, calibrate_mode="max", **ACCURATE)
    assert result.report["accuracy"]["held_out"] is True and result.report["accuracy"]["samples"] == 2
    assert result.report["calibration"]["samples_seen"] == 8
    assert result.report["accuracy"]["layers"]
    sample = {"x": feeds["9/x"], "state": feeds["9/state"], "sr": feeds["9/sr"]}
    got = run_artifact(result.artifact, list(sample.values()))[0]
    assert cosine(got, run_onnx(model, sample)[0]) >= 0.99
