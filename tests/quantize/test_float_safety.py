"""Patterns that do not survive int8 stay float with a named reason: decomposed layer norms, and
subtractions of nearly equal tensors (decided from the calibrated ranges)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tests.models as models
from tests.quantize.conftest import ACCURATE, cosine, quantize, run_artifact, run_onnx
from worker import frontend
from worker.qconfig import QConfig
from worker.quantize.graph import build_graph, labels
from worker.quantize.partition import partition
from worker.quantize.prerequisite import prerequisite_optimize


def _graph(model):
    shapes = frontend.fixed_input_shapes(model, None)
    return build_graph(prerequisite_optimize(frontend.import_relax(frontend.simplify(model, shapes), shapes)))


def _float_reasons(result) -> set[str]:
    """Every reason given, one by one (a kernel joins the reasons of the ops fused into it)."""
    ops = result.report["integrality"]["ops"]
    return {part for op in ops if op["reason"] for part in op["reason"].split("; ")}


def test_layer_norm_chain_is_recognised_and_the_convs_stay_quantized():
    graph = _graph(models.conv_layer_norm_conv())
    reasons = partition(graph, QConfig(**ACCURATE)).reasons
    names = labels(graph)
    norm = {names[n.var]: why for n, why in reasons.items() if why.startswith("layer norm:")}
    assert {"mean#0", "mean#1", "subtract#0", "subtract#1", "sqrt#0", "multiply#2"} <= set(norm), norm
    assert all("E[x²] − E[x]²" in why for why in norm.values())
    assert not any(names[n.var].startswith("nn.conv2d") for n in reasons)


@pytest.mark.parametrize("simulate", [False, True])
def test_layer_norm_between_convs_keeps_its_accuracy(tmp_path, simulate):
    model = models.conv_layer_norm_conv()
    calibration = models.random_calibration(model, 12, 0)
    result = quantize(tmp_path, model, calibration, calibrate_mode="max", do_simulation=simulate, **ACCURATE)
    x = calibration["x"][:1]
    assert cosine(run_artifact(result.artifact, [x])[0], run_onnx(model, {"x": x})[0]) >= 0.99
    assert any(r.startswith("layer norm:") for r in _float_reasons(result)), _float_reasons(result)


def _nearly_equal_difference() -> object:
    """(conv1(x) + 40) − |conv2(x) + 40| → conv, conv2 ≈ conv1: the difference is a few percent of its
    operands. The Abs has no int8 rule, so the subtraction would quantize it to int8 at its own range."""
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32)
    tensors = [
        numpy_helper.from_array(w, "w1"),
        numpy_helper.from_array((w + rng.normal(0, 0.05, w.shape)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w3"),
        numpy_helper.from_array(np.full((1, 8, 1, 1), 40.0, np.float32), "offset"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a0"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a0", "offset"], ["a"]),
        helper.make_node("Conv", ["x", "w2"], ["b0"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b0", "offset"], ["b1"]),
        helper.make_node("Abs", ["b1"], ["b"]),
        helper.make_node("Sub", ["a", "b"], ["d"]),
        helper.make_node("Conv", ["d", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cancellation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        tensors,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_subtraction_of_nearly_equal_tensors_stays_float_naming_the_ratio(tmp_path):
    model = _nearly_equal_difference()
    calibration = models.random_calibration(model, 12, 1)
    result = quantize(tmp_path, model, calibration, calibrate_mode="max", **ACCURATE)
    cancelled = [r for r in _float_reasons(result) if r.startswith("cancellation:")]
    assert len(cancelled) == 1 and " is 1/" in cancelled[0], _float_reasons(result)
    x = calibration["x"][:1]
    assert cosine(run_artifact(result.artifact, [x])[0], run_onnx(model, {"x": x})[0]) >= 0.99
