"""LSTM, GRU and RNN nodes unrolled over their static sequence length into plain ONNX ops.

Why this shape: the input-to-hidden products of every time step and both directions are one
MatMul of the whole sequence with one constant 2-D weight (a dense layer to the quantizer), so the
only per-step products are the recurrent ones, each a MatMul of the state with a constant R^T.
Gates are Sigmoid/Tanh (int8 lookup tables in the quantizer) joined by Mul/Add. A state that starts
at zero (no initial_h / initial_c, or an all-zero constant) skips the first step's products with it.

What the cells compute per step lives in `cells.py`; this module reads the node (attributes, the
constant weights, the static sequence length) and lays out the time steps and the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from worker.converters.cells import CELLS, Activation, Cell, State, activation
from worker.converters.scope import Scope, Writer
from worker.errors import UnsupportedOpError

_DIRECTIONS = {"forward": ("forward",), "reverse": ("reverse",), "bidirectional": ("forward", "reverse")}
_TAGS = {"forward": "fw", "reverse": "bw"}


@dataclass(frozen=True)
class Recurrence:
    """One recurrent node, read and checked: everything the unrolling needs, weights as arrays."""

    cell: Cell
    name: str
    x: str
    steps: int
    layout: int
    directions: tuple[str, ...]
    weights: dict[str, np.ndarray | None]  # W [D, G·H, I], R [D, G·H, H], B [D, 2·G·H], P [D, 3H]
    initial: dict[str, str | None]  # "h", "c": the state inputs, None when they start at zero
    activations: tuple[tuple[Activation, ...], ...]  # per direction
    clip: float | None
    attrs: dict  # the cell's own attributes (input_forget, linear_before_reset)
    outputs: tuple[str | None, ...]  # Y, Y_h, Y_c; None when absent or never read

    @property
    def hidden(self) -> int:
        return int(self.weights["R"].shape[-1])

    @property
    def dtype(self) -> np.dtype:
        return self.weights["W"].dtype


def expand(node: onnx.NodeProto, scope: Scope, writer: Writer, read: set[str]) -> list[onnx.NodeProto]:
    """The nodes that compute what `node` computes (only its outputs that something reads)."""
    rec = _read(node, scope, read)
    if not any(rec.outputs):
        return []
    produced = _unroll(rec, writer)
    names = {temp: out for temp, out in zip(produced, rec.outputs, strict=True) if out}
    return _live(_rename(writer.take(), names), set(names.values()))


def _fail(node: onnx.NodeProto, name: str, problem: str) -> UnsupportedOpError:
    return UnsupportedOpError(
        f"{node.op_type} node '{name}': {problem}", op=node.op_type, node=name, reason=problem
    )


def _read(node: onnx.NodeProto, scope: Scope, read: set[str]) -> Recurrence:
    cell = CELLS[node.op_type]
    name = node.name or node.output[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inputs = [*node.input, *[""] * (8 - len(node.input))]

    direction = attrs.get("direction", b"forward").decode()
    if direction not in _DIRECTIONS:
        raise _fail(node, name, f"direction '{direction}' is not forward, reverse or bidirectional")
    directions = _DIRECTIONS[direction]
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise _fail(node, name, f"layout {layout} is not 0 or 1")

    weights: dict[str, np.ndarray | None] = {}
    for key, index in (("W", 1), ("R", 2), ("B", 3), ("P", 7)):
        if index == 7 and cell.op_type != "LSTM":
            continue
        weights[key] = _constant_input(node, name, scope, inputs[index], key, required=index < 3)
    _check_weights(node, name, cell, weights, len(directions), attrs.get("hidden_size"))

    steps = scope.dim(inputs[0], layout)
    if steps is None:
        raise _fail(
            node,
            name,
            "the sequence length must be static to unroll it; fix the model's input shapes "
            "(calibration data of the size to compile for) so that it becomes a constant",
        )
    _check_sequence_lens(node, name, scope, inputs[4], steps)

    initial = {"h": _state(scope, inputs[5])}
    if cell.op_type == "LSTM":
        initial["c"] = _state(scope, inputs[6])
    clip = attrs.get("clip")
    outputs = tuple(o if o and o in read else None for o in [*node.output, "", "", ""][: cell.outputs])
    return Recurrence(
        cell=cell,
        name=name,
        x=inputs[0],
        steps=steps,
        layout=layout,
        directions=directions,
        weights=weights,
        initial=initial,
        activations=_activations(node, name, cell, attrs, len(directions)),
        clip=None if clip is None else float(clip),
        attrs={k: int(attrs.get(k, 0)) for k in cell.flags},
        outputs=outputs,
    )


def _constant_input(
    node: onnx.NodeProto, name: str, scope: Scope, tensor: str, role: str, required: bool
) -> np.ndarray | None:
    if not tensor:
        if required:
            raise _fail(node, name, f"input {role} is missing")
        return None
    value = scope.constant(tensor)
    if value is None:
        raise _fail(
            node, name, f"input {role} ('{tensor}') must be a constant (weights known before running)"
        )
    return value


def _check_weights(
    node: onnx.NodeProto,
    name: str,
    cell: Cell,
    weights: dict[str, np.ndarray | None],
    num_directions: int,
    hidden_size: int | None,
) -> None:
    w, r = weights["W"], weights["R"]
    hidden = r.shape[-1] if r.ndim == 3 else -1
    gated = cell.gates * hidden
    expected = {
        "W": (num_directions, gated, w.shape[-1] if w.ndim == 3 else -1),
        "R": (num_directions, gated, hidden),
        "B": (num_directions, 2 * gated),
        "P": (num_directions, 3 * hidden),
    }
    for key, value in weights.items():
        if value is not None and tuple(value.shape) != expected[key]:
            raise _fail(node, name, f"input {key} has shape {tuple(value.shape)}, expected {expected[key]}")
    if w.dtype.kind != "f":
        raise _fail(node, name, f"input W has dtype {w.dtype}, expected a float type")
    if hidden_size is not None and int(hidden_size) != hidden:
        raise _fail(node, name, f"hidden_size={hidden_size} does not match R's last dim {hidden}")


def _check_sequence_lens(node: onnx.NodeProto, name: str, scope: Scope, tensor: str, steps: int) -> None:
    if not tensor:
        return
    lens = scope.constant(tensor)
    if lens is None or np.any(lens != steps):
        found = "not a constant" if lens is None else f"{lens.tolist()}"
        raise _fail(
            node,
            name,
            f"sequence_lens must be a constant equal to the sequence length {steps} for every batch "
            f"entry (found {found}); padded batches of different lengths are not supported",
        )


def _state(scope: Scope, tensor: str) -> str | None:
    """The initial state's tensor, or None when it starts at zero."""
    if not tensor:
        return None
    value = scope.constant(tensor)
    return None if value is not None and not np.any(value) else tensor


def _activations(
    node: onnx.NodeProto, name: str, cell: Cell, attrs: dict, num_directions: int
) -> tuple[tuple[Activation, ...], ...]:
    names = [n.decode() for n in attrs.get("activations", [])] or list(cell.activations) * num_directions
    count = len(cell.activations)
    alphas = list(attrs.get("activation_alpha", []))
    betas = list(attrs.get("activation_beta", []))
    try:
        parsed = [activation(n, alphas, betas) for n in names]
    except ValueError as exc:
        raise _fail(node, name, str(exc)) from exc
    if len(parsed) == count and num_directions == 2:
        parsed *= 2  # one list for both directions
    if len(parsed) != count * num_directions:
        raise _fail(
            node,
            name,
            f"activations lists {len(names)} functions; {node.op_type} needs {count} per direction",
        )
    return tuple(tuple(parsed[d * count : (d + 1) * count]) for d in range(num_directions))


def _unroll(rec: Recurrence, w: Writer) -> tuple[str | None, ...]:
    """Write the unrolled computation; returns the tensors holding Y, Y_h (and Y_c)."""
    n, steps, hidden = rec.name, rec.steps, rec.hidden
    tags = [_TAGS[d] for d in rec.directions]
    width = rec.cell.gates * hidden
    x = rec.x if rec.layout == 0 else w.op("Transpose", [rec.x], f"{n}/x_time_major", perm=[1, 0, 2])

    kernel = np.concatenate([wd.T for wd in rec.weights["W"]], axis=1)
    proj = w.op("MatMul", [x, w.const(f"{n}/W_T", kernel)], f"{n}/x_proj")
    bias = rec.cell.input_bias(rec)
    if bias is not None:
        proj = w.op("Add", [proj, w.const(f"{n}/x_bias", bias.reshape(-1))], f"{n}/x_proj_bias")
    per_direction = w.split(proj, [width] * len(tags), 2, [f"{n}/{tag}/x_proj" for tag in tags])
    initial = {key: _per_direction(w, rec, key, tensor, tags) for key, tensor in rec.initial.items()}

    finals: list[State] = []
    sequences: list[list[str]] = []  # per direction, h of every step in time order
    for d, tag in enumerate(tags):
        xs = w.split(per_direction[d], [1] * steps, 0, [f"{n}/{tag}/t{t}/x_proj" for t in range(steps)])
        step = rec.cell.stepper(w, rec, d, f"{n}/{tag}")
        state = State(**{key: initial[key][d] for key in initial})
        hs: list[str] = [""] * steps
        order = range(steps) if rec.directions[d] == "forward" else range(steps - 1, -1, -1)
        for t in order:
            state = step(xs[t], state, f"{n}/{tag}/t{t}")
            hs[t] = state.h
        finals.append(state)
        sequences.append(hs)

    y, y_h, *y_c = rec.outputs
    produced: list[str | None] = [None] * len(rec.outputs)
    if y:
        parts = [
            w.unsqueeze(w.concat(hs, 0, f"{n}/{tag}/Y"), [1], f"{n}/{tag}/Y_4d")
            for hs, tag in zip(sequences, tags, strict=True)
        ]
        value = w.concat(parts, 1, f"{n}/Y")  # [T, D, B, H]
        if rec.layout == 1:
            value = w.op("Transpose", [value], f"{n}/Y_batch_major", perm=[2, 0, 1, 3])
        produced[0] = value
    if y_h:
        produced[1] = _final(w, rec, [s.h for s in finals], f"{n}/Y_h")
    if y_c and y_c[0]:
        produced[2] = _final(w, rec, [s.c for s in finals], f"{n}/Y_c")
    return tuple(produced)


def _per_direction(w: Writer, rec: Recurrence, key: str, tensor: str | None, tags: list[str]) -> list:
    """An initial state [D, B, H] (layout 1: [B, D, H]) as one [1, B, H] tensor per direction."""
    if tensor is None:
        return [None] * len(tags)
    if rec.layout == 1:
        tensor = w.op("Transpose", [tensor], f"{rec.name}/initial_{key}_direction_major", perm=[1, 0, 2])
    return w.split(tensor, [1] * len(tags), 0, [f"{rec.name}/{tag}/initial_{key}" for tag in tags])


def _final(w: Writer, rec: Recurrence, states: list[str], name: str) -> str:
    value = w.concat(states, 0, name)
    return value if rec.layout == 0 else w.op("Transpose", [value], f"{name}_batch_major", perm=[1, 0, 2])


def _live(nodes: list[onnx.NodeProto], wanted: set[str]) -> list[onnx.NodeProto]:
    """The nodes that `wanted` depends on. Steps are written uniformly, so some results go unused:
    the forget gate and GRU's reset gate of a step from a zero state, the last step's h when only
    the cell state is read."""
    kept = []
    for node in reversed(nodes):
        if wanted.intersection(node.output):
            kept.append(node)
            wanted.update(node.input)
    return kept[::-1]


def _rename(nodes: list[onnx.NodeProto], names: dict[str, str]) -> list[onnx.NodeProto]:
    """Give the tensors that hold the node's outputs the original output names."""
    for node in nodes:
        for field in (node.input, node.output):
            for i, tensor in enumerate(field):
                if tensor in names:
                    field[i] = names[tensor]
    return nodes
