"""Models with one recurrent node (LSTM, GRU or RNN) and random weights, built with onnx.helper."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
OUTPUTS = {"LSTM": ("Y", "Y_h", "Y_c"), "GRU": ("Y", "Y_h"), "RNN": ("Y", "Y_h")}


@dataclass(frozen=True)
class Case:
    """One recurrent node: op, sizes, and which optional inputs and attributes it has."""

    op: str
    direction: str = "forward"
    layout: int = 0
    steps: int = 4
    batch: int = 2
    input_size: int = 6
    hidden: int = 4
    bias: bool = True
    initial_h: bool = False
    initial_c: bool = False
    peepholes: bool = False
    sequence_lens: bool = False
    attrs: dict = field(default_factory=dict)
    outputs: tuple[str, ...] = ()  # default: all of the op's outputs
    opset: int = 17

    @property
    def directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    def id(self) -> str:
        parts = [self.op, self.direction, f"layout{self.layout}", f"T{self.steps}"]
        parts += [k for k in ("initial_h", "initial_c", "peepholes", "sequence_lens") if getattr(self, k)]
        parts += [] if self.bias else ["nobias"]
        parts += [f"{k}={_short(v)}" for k, v in self.attrs.items()]
        parts += [f"out={'+'.join(self.outputs)}"] if self.outputs else []
        parts += [] if self.opset == 17 else [f"opset{self.opset}"]
        return "-".join(parts)


def _short(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_short(v) for v in value)
    return value.decode() if isinstance(value, bytes) else str(value)


def _batch_major(case: Case, dims: tuple[int, int]) -> list[int]:
    """[first, batch, rest] in layout 0, [batch, first, rest] in layout 1."""
    first, rest = dims
    return [case.batch, first, rest] if case.layout else [first, case.batch, rest]


def _output_shape(case: Case, name: str) -> list[int]:
    d, h = case.directions, case.hidden
    if name == "Y":
        return [case.batch, case.steps, d, h] if case.layout else [case.steps, d, case.batch, h]
    return _batch_major(case, (d, h))


def recurrent_model(case: Case, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    d, h, g = case.directions, case.hidden, GATES[case.op]
    scale = 1.0 / np.sqrt(h)
    inits = {
        "W": rng.uniform(-scale, scale, (d, g * h, case.input_size)),
        "R": rng.uniform(-scale, scale, (d, g * h, h)),
    }
    if case.bias:
        inits["B"] = rng.uniform(-scale, scale, (d, 2 * g * h))
    if case.sequence_lens:
        inits["sequence_lens"] = np.full(case.batch, case.steps, dtype=np.int32)
    if case.peepholes:
        inits["P"] = rng.uniform(-scale, scale, (d, 3 * h))
    graph_inputs = [
        helper.make_tensor_value_info(
            "X", TensorProto.FLOAT, _batch_major(case, (case.steps, case.input_size))
        )
    ]
    for state in ("initial_h", "initial_c"):
        if getattr(case, state):
            graph_inputs.append(
                helper.make_tensor_value_info(state, TensorProto.FLOAT, _batch_major(case, (d, h)))
            )
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    present = set(inits) | {vi.name for vi in graph_inputs}
    inputs = [name if name in present else "" for name in order[: 8 if case.op == "LSTM" else 6]]
    while inputs and not inputs[-1]:
        inputs.pop()
    wanted = case.outputs or OUTPUTS[case.op]
    outputs = [name if name in wanted else "" for name in OUTPUTS[case.op]]
    attrs = {"hidden_size": h, "direction": case.direction, **case.attrs}
    if case.layout:
        attrs["layout"] = 1
    node = helper.make_node(case.op, inputs, outputs, name=f"{case.op.lower()}_node", **attrs)
    graph = helper.make_graph(
        [node],
        case.op.lower(),
        graph_inputs,
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, _output_shape(case, name))
            for name in outputs
            if name
        ],
        [
            numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k)
            for k, v in inits.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def feeds(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
        for vi in model.graph.input
    }


def reference_model(case: Case, seed: int = 0) -> onnx.ModelProto:
    """What ONNX Runtime can run for `case`: itself, or for layout 1 (which ORT refuses) the
    layout-0 node with the same weights between Transposes to and from batch-major."""
    if not case.layout:
        return recurrent_model(case, seed)
    inner = recurrent_model(replace(case, layout=0), seed)
    outer = recurrent_model(case, seed)
    node = inner.graph.node[0]
    before, after = [], []
    for i, name in enumerate(node.input):
        if name in ("X", "initial_h", "initial_c"):
            node.input[i] = f"{name}_time_major"
            before.append(helper.make_node("Transpose", [name], [node.input[i]], perm=[1, 0, 2]))
    for i, name in enumerate(node.output):
        if name:
            node.output[i] = f"{name}_time_major"
            perm = [2, 0, 1, 3] if name == "Y" else [1, 0, 2]
            after.append(helper.make_node("Transpose", [node.output[i]], [name], perm=perm))
    graph = helper.make_graph(
        [*before, node, *after], "reference", outer.graph.input, outer.graph.output, inner.graph.initializer
    )
    return helper.make_model(graph, opset_imports=inner.opset_import, ir_version=inner.ir_version)
