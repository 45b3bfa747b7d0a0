"""Tiny one-op models for the front-door tests, with exactly the input shapes a test needs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = int | str | None


def relu_model(inputs: dict[str, Sequence[Dim]]) -> onnx.ModelProto:
    """One Relu per input (a str dim is symbolic, None unknown): the smallest valid model."""
    nodes = [helper.make_node("Relu", [name], [f"{name}_out"]) for name in inputs]
    graph = helper.make_graph(
        nodes,
        "relu",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def rate_switch_model(
    rates: tuple[int, int] = (16000, 8000), sizes: tuple[int, int] = (4, 2)
) -> onnx.ModelProto:
    """silero-vad's shape in miniature: an If on a scalar int64 `sr` picks one of two dense layers,
    each written for its own chunk length (`sizes`), and the chunk `x` has a dynamic length.

    The else branch lifts x to rank 5 before its MatMul, as silero's 8 kHz branch does: once x is
    pinned to the first rate's length, that MatMul's reduction dims disagree ((1, 1, 1, 1, 4) x (2, 3)).
    """
    x_dims = ["batch", "n"]
    cond = helper.make_node("Equal", ["sr", "rate"], ["is_first"])
    then = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w_first"], ["y_first"])],
        "first_rate",
        [],
        [helper.make_tensor_value_info("y_first", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(_weights(sizes[0], 0), "w_first")],
    )
    other = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "rank5"], ["x5"]),
            helper.make_node("MatMul", ["x5", "w_second"], ["y5"]),
            helper.make_node("Reshape", ["y5", "rank2"], ["y_second"]),
        ],
        "second_rate",
        [],
        [helper.make_tensor_value_info("y_second", TensorProto.FLOAT, [1, 3])],
        [
            numpy_helper.from_array(_weights(sizes[1], 1), "w_second"),
            numpy_helper.from_array(np.array([1, 1, 1, 1, -1], np.int64), "rank5"),
            numpy_helper.from_array(np.array([1, -1], np.int64), "rank2"),
        ],
    )
    switch = helper.make_node("If", ["is_first"], ["y"], then_branch=then, else_branch=other)
    graph = helper.make_graph(
        [cond, switch],
        "rate_switch",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.array(rates[0], np.int64), "rate")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weights(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 3)).astype(np.float32)
