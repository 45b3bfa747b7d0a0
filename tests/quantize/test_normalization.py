"""Integer softmax and layer norm against the float ops on the same int8 input: the integer forms
add no more than a rounding step of their own."""

from __future__ import annotations

from functools import partial

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

from worker import frontend
from worker.build import compile_and_load
from worker.qconfig import QConfig
from worker.quantize.graph import build_graph
from worker.quantize.prerequisite import prerequisite_optimize
from worker.quantize.realize import Realizer

RUN = partial(compile_and_load, target=tvm.target.Target({"kind": "llvm"}))
SHAPE = (2, 8, 48)
THRESHOLD = 6.0
SCALE = THRESHOLD / 128


def _run(node: onnx.NodeProto, inits: list[onnx.TensorProto], x: np.ndarray) -> tuple[np.ndarray, dict]:
    graph = helper.make_graph(
        [node],
        "norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    shapes = frontend.fixed_input_shapes(model, None)
    g = build_graph(prerequisite_optimize(frontend.import_relax(frontend.simplify(model, shapes), shapes)))
    ops = {n for n in g.nodes if n.op is not None}
    realizer = Realizer(g, QConfig(), quantized=ops, thresholds={g.params[0]: THRESHOLD})
    out = RUN(realizer.build())["main"](tvm.runtime.tensor(x)).numpy()
    return out, {n.op: info for n, info in realizer.tables.items()}


def _input() -> np.ndarray:
    """Values on the int8 grid (what the quantized input holds), with a wide spread of ranges."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE) * rng.uniform(0.05, 2.0, (*SHAPE[:2], 1)) + rng.uniform(
        -1, 1, (*SHAPE[:2], 1)
    )
    return (np.clip(np.round(x / SCALE), -127, 127) * SCALE).astype(np.float32)


def test_integer_softmax_is_within_a_probability_step() -> None:
    x = _input()
    got, tables = _run(helper.make_node("Softmax", ["x"], ["y"], axis=-1), [], x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    expected = e / e.sum(axis=-1, keepdims=True)
    assert "integer softmax" in tables["nn.softmax"].form
    assert np.abs(got - expected).max() <= 1.0 / 127


@pytest.mark.filterwarnings("error:tvmq CPU pipeline failed")  # the isqrt loop fuses with our kernels
def test_integer_layer_norm_matches_the_float_one() -> None:
    x = _input()
    rng = np.random.default_rng(1)
    gamma = (1.0 + 0.2 * rng.standard_normal(SHAPE[-1])).astype(np.float32)
    beta = (0.1 * rng.standard_normal(SHAPE[-1])).astype(np.float32)
    inits = [numpy_helper.from_array(gamma, "g"), numpy_helper.from_array(beta, "b")]
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)
    got, tables = _run(node, inits, x)
    mean, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-5) * gamma + beta
    assert "integer layer norm" in tables["nn.layer_norm"].form
    # gamma on the int8 weight grid dominates (as a weight, its largest value maps to 128 and is
    # clipped to 127: up to 1/128 of it); the normalised value itself is exact to 2^-10
    bound = np.abs(gamma).max() / 128 * np.abs((x - mean) / np.sqrt(var + 1e-5)).max() + 2**-9
    assert np.abs(got - expected).max() <= bound
