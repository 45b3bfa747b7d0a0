"""Tiny one-op models for the front-door tests, with exactly the input shapes a test needs."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

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
