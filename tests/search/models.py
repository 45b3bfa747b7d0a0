"""Models where full int8 misses a tight target, built with onnx.helper.

`outlier_mlp`: four dense layers; the second writes one channel 1000x larger than the others and
the third reads every channel (the outlier through a small weight). The third layer's input is
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
OUTLIER = 1000.0
#: the layer that must stay float, as the report labels it (the third dense: graph index 2)
SENSITIVE = "matmul#2"


def _dense(name: str, x: str, w: np.ndarray, b: np.ndarray, inits: list, nodes: list) -> str:
    inits += [numpy_helper.from_array(w.astype(np.float32), f"{name}_w")]
    inits += [numpy_helper.from_array(b.astype(np.float32), f"{name}_b")]
    nodes += [
        helper.make_node("MatMul", [x, f"{name}_w"], [f"{name}_mm"]),
        helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [name]),
    ]
    return name


def outlier_mlp(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes: list = []
    he = np.sqrt(2.0 / WIDTH)
    h = _dense("fc0", "x", rng.normal(0, he, (WIDTH, WIDTH)), np.zeros(WIDTH), inits, nodes)
    nodes.append(helper.make_node("Relu", [h], ["r0"]))
    w1 = rng.normal(0, he, (WIDTH, WIDTH))
    w1[:, 0] *= OUTLIER  # channel 0 of fc1's output is the outlier
    h = _dense("fc1", "r0", w1, np.zeros(WIDTH), inits, nodes)
    w2 = rng.normal(0, he, (WIDTH, WIDTH))
    w2[0, :] *= 3.0 / OUTLIER  # it still matters: ~3x an ordinary channel's share, not 1000x
    h = _dense("fc2", h, w2, np.zeros(WIDTH), inits, nodes)
    nodes.append(helper.make_node("Relu", [h], ["r2"]))
    _dense("fc3", "r2", rng.normal(0, he, (WIDTH, CLASSES)), np.zeros(CLASSES), inits, nodes)
    graph = helper.make_graph(
        nodes,
        "outlier_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("fc3", TensorProto.FLOAT, ["N", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def samples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, WIDTH), dtype=np.float32)
