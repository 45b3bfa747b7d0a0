"""A reshape that keeps the channel axis whole carries a per-channel scale through: a dense layer's
int32 accumulators reshaped on their way (a recognizer's (T, classes) logits) are requantized once,
in int32, not first collapsed to one scale in int64."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.quantize.conftest import ACCURATE, cosine, quantize, run_artifact, run_onnx
from worker.quantize.ops.layout import channel_scale_after_reshape


@pytest.mark.parametrize(
    ("in_shape", "out_shape", "axis", "expected_axis"),
    [
        ((40, 6), (1, 40, 6), 1, 2),  # expand_dims in front
        ((1, 40, 6), (40, 6), 2, 1),  # squeeze in front
        ((2, 6, 3, 4), (2, 6, 12), 1, 1),  # the spatial axes after the channel merge
        ((2, 6, 3, 4), (12, 12), 1, None),  # the channel merged with the batch
        ((4, 6), (4, 2, 3), 1, None),  # the channel split
    ],
)
def test_channel_axis_through_a_reshape(in_shape, out_shape, axis, expected_axis) -> None:
    shape = [1] * len(in_shape)
    shape[axis] = in_shape[axis]
    scale = np.arange(1, in_shape[axis] + 1, dtype=np.float64).reshape(shape)
    out = channel_scale_after_reshape(scale, in_shape, out_shape)
    if expected_axis is None:
        assert out is None
        return
    assert out.shape == tuple(in_shape[axis] if a == expected_axis else 1 for a in range(len(out_shape)))
    np.testing.assert_array_equal(out.ravel(), scale.ravel())


def _logits_net() -> onnx.ModelProto:
    """A recognizer's head: (1, T, C) MatMul + bias (per-channel weights) -> Softmax over the
    classes. The importer flattens the MatMul to 2-D and reshapes its result back to 3-D."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (32, 50)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 50).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=2),
    ]
    graph = helper.make_graph(
        nodes,
        "logits",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 20, 32))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 20, 50))],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_dense_logits_keep_per_channel_scales_through_the_reshape(tmp_path) -> None:
    model = _logits_net()
    calibration = {"x": np.random.default_rng(1).standard_normal((8, 20, 32)).astype(np.float32)}
    result = quantize(tmp_path, model, calibration, calibrate_mode="max", **ACCURATE)
    text = (tmp_path / "out" / "quantized.relax.py").read_text()
    assert "int64" not in text, "the accumulators were collapsed to one scale in int64"
    assert result.report["summary"]["fully_integral"]
    x = calibration["x"][:1]
    assert cosine(run_artifact(result.artifact, [x])[0], run_onnx(model, {"x": x})[0]) >= 0.99
