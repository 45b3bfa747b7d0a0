"""1-D convolutions (audio front ends, temporal nets) are quantized like 2-D ones: int8 x int8 ->
int32, per-channel weights, counted in the integer MACs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.quantize.conftest import ACCURATE, cosine, quantize, run_artifact, run_onnx


def _conv1d_net() -> onnx.ModelProto:
    """conv1d (stride 2, padded) -> relu -> the two channel halves sliced and added (an STFT front
    end's real and imaginary parts) -> grouped conv1d (dilated) -> relu -> conv1d 1x1."""
    rng = np.random.default_rng(0)

    def w(shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(0, 0.3, shape).astype(np.float32)

    shapes = {"w0": (16, 4, 5), "w1": (16, 2, 3), "w2": (8, 16, 1)}
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), k) for k, s in shapes.items()
    ]
    weights.append(numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "b0"))
    for name, value in (("zero", 0), ("eight", 8), ("sixteen", 16), ("one", 1)):  # Slice on axis 1
        weights.append(numpy_helper.from_array(np.array([value], np.int64), name))
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[5], strides=[2], pads=[2, 2]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Slice", ["r0", "zero", "eight", "one"], ["real"]),
        helper.make_node("Slice", ["r0", "eight", "sixteen", "one"], ["imag"]),
        helper.make_node("Add", ["real", "imag"], ["both"]),
        helper.make_node(
            "Conv", ["both", "w1"], ["c1"], kernel_shape=[3], dilations=[2], pads=[2] * 2, group=4
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"], kernel_shape=[1]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv1d_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4, 64))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 8, 32))],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_conv1d_layers_run_in_integers(tmp_path):
    model = _conv1d_net()
    calibration = {"x": np.random.default_rng(1).standard_normal((8, 4, 64)).astype(np.float32)}
    result = quantize(
        tmp_path, model, calibration, calibrate_mode="max", partition_conversions="fully_integral", **ACCURATE
    )
    integrality = result.report["integrality"]
    convs = [op for op in integrality["ops"] if op["relax_op"] == "nn.conv1d"]
    assert len(convs) == 3 and all(op["integral"] for op in convs), convs
    slices = [op for op in integrality["ops"] if op["relax_op"] == "strided_slice"]
    assert slices and all(op["integral"] for op in slices), "the slices move integers"
    assert integrality["counts"]["integer_macs"] == 16 * 32 * 4 * 5 + 16 * 32 * 2 * 3 + 8 * 32 * 16
    x = calibration["x"][:1]
    assert cosine(run_artifact(result.artifact, [x])[0], run_onnx(model, {"x": x})[0]) >= 0.99
