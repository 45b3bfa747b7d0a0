"""A conv + bidirectional LSTM through the whole pipeline: its matmuls are quantized like dense layers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import tests.models as models
from tests.quantize.conftest import ACCURATE, cosine, quantize, run_artifact, run_onnx

STEPS, HIDDEN, CLASSES = 4, 16, 8


def conv_lstm() -> onnx.ModelProto:
    """x [1, 3, 8, 4] → conv → relu → conv over the height → a sequence of 4 → LSTM → dense."""
    rng = np.random.default_rng(11)

    def he(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)

    def uniform(*shape: int) -> np.ndarray:
        bound = 1 / np.sqrt(HIDDEN)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    weights = {
        "conv1_w": he(8, 3, 3, 3),
        "conv2_w": he(HIDDEN, 8, 8, 1),
        "seq_shape": np.array([1, HIDDEN, STEPS], np.int64),
        "lstm_w": uniform(2, 4 * HIDDEN, HIDDEN),
        "lstm_r": uniform(2, 4 * HIDDEN, HIDDEN),
        "lstm_b": uniform(2, 8 * HIDDEN),
        "feature_shape": np.array([STEPS, 1, 2 * HIDDEN], np.int64),
        "head_w": rng.normal(0, np.sqrt(1 / HIDDEN), (2 * HIDDEN, CLASSES)).astype(np.float32),
        "head_b": uniform(CLASSES),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv1_w"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2_w"], ["c2"]),
        helper.make_node("Reshape", ["c2", "seq_shape"], ["features"]),
        helper.make_node("Transpose", ["features"], ["sequence"], perm=[2, 0, 1]),
        helper.make_node(
            "LSTM",
            ["sequence", "lstm_w", "lstm_r", "lstm_b"],
            ["lstm_y"],
            name="encoder_lstm",
            hidden_size=HIDDEN,
            direction="bidirectional",
        ),
        helper.make_node("Transpose", ["lstm_y"], ["lstm_y_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["lstm_y_t", "feature_shape"], ["lstm_features"]),
        helper.make_node("MatMul", ["lstm_features", "head_w"], ["logits_mm"]),
        helper.make_node("Add", ["logits_mm", "head_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, STEPS])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [STEPS, 1, CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_conv_lstm_quantizes_its_matmuls_and_stays_accurate(tmp_path):
    model = conv_lstm()
    calibration = models.random_calibration(model, 16, 3)
    result = quantize(tmp_path, model, calibration, calibrate_mode="max", **ACCURATE)

    matmuls = [op for op in result.report["integrality"]["ops"] if op["relax_op"] == "matmul"]
    # one input projection for all steps and both directions, a recurrent product per step after
    # the first in each direction, the dense head
    assert len(matmuls) == 1 + 2 * (STEPS - 1) + 1
    # each is (in) a kernel of the artifact, its requantize epilogue fused in: integral, in the core
    assert all(op["group"] == "core" and op["integral"] for op in matmuls), matmuls

    feeds = {"x": calibration["x"][:1]}
    got = run_artifact(result.artifact, [feeds["x"]])[0]
    want = run_onnx(model, feeds)[0]
    assert cosine(got, want) >= 0.98
    assert result.report["summary"]["cosine"] >= 0.98
