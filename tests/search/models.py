"""Models where full int8 misses a tight target, built with onnx.helper.

`outlier_mlp`: four dense layers; one writes one channel 1000x larger than the others and the next
reads every channel (the outlier through a small weight). The reading layer's input is
quantized per tensor (activations always are): at max its step is ~8, so the ordinary channels
(|x| ~ 1) vanish; clipped to them, the outlier's share is lost. Per-channel weights cannot help, no
calibrate mode can: only keeping that one layer float meets a tight target, and it is the layer
the sensitivity ranking puts first.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH = 16
CLASSES = 10
LAYERS = 4
OUTLIER = 1000.0


def _dense(name: str, x: str, w: np.ndarray, b: np.ndarray, inits: list, nodes: list) -> str:
    inits += [numpy_helper.from_array(w.astype(np.float32), f"{name}_w")]
    inits += [numpy_helper.from_array(b.astype(np.float32), f"{name}_b")]
    nodes += [
        helper.make_node("MatMul", [x, f"{name}_w"], [f"{name}_mm"]),
        helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [name]),
    ]
    return name


def outlier_mlp(sensitive: int = 2, seed: int = 0) -> onnx.ModelProto:
    """Four dense layers (ReLU between them but before the outlier's reader); layer
    `sensitive - 1` writes the outlier channel, layer `sensitive` (1..3) reads it."""
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes: list = []
    he = np.sqrt(2.0 / WIDTH)
    x = "x"
    for i in range(LAYERS):
        out = CLASSES if i == LAYERS - 1 else WIDTH
        w = rng.normal(0, he, (WIDTH, out))
        if i == sensitive - 1:
            w[:, 0] *= OUTLIER  # channel 0 of this layer's output is the outlier
        if i == sensitive:
            w[0, :] *= 3.0 / OUTLIER  # it still matters: ~3x an ordinary channel's share, not 1000x
        x = _dense(f"fc{i}", x, w, np.zeros(out), inits, nodes)
        if i < LAYERS - 1 and i != sensitive - 1:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "outlier_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def layer(i: int) -> str:
    """The report's label of dense layer i (graph order)."""
    return f"matmul#{i}"


def samples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, WIDTH), dtype=np.float32)
