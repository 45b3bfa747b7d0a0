"""One time step of each recurrent cell, as the ONNX spec defines it, written as plain ops.

Each cell gets the step's slice of the input projection (x·W^T with the constant biases already
added) and the state; a state of None is zero, so products with it are not written. Gate order
in W, R and B is the spec's: LSTM i, o, f, c (peepholes i, o, f); GRU z, r, h; RNN one gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from worker.converters.scope import Writer

if TYPE_CHECKING:
    from worker.converters.recurrent import Recurrence


@dataclass(frozen=True)
class Activation:
    op: str
    attrs: dict[str, float]


#: activation name (any case) -> (ONNX op, (attribute, default) taken from activation_alpha,
#: (attribute, default) taken from activation_beta)
_ACTIVATIONS: dict[str, tuple[str, tuple[str, float] | None, tuple[str, float] | None]] = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "leakyrelu": ("LeakyRelu", ("alpha", 0.01), None),
    "thresholdedrelu": ("ThresholdedRelu", ("alpha", 1.0), None),
    "hardsigmoid": ("HardSigmoid", ("alpha", 0.2), ("beta", 0.5)),
    "elu": ("Elu", ("alpha", 1.0), None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
}


def activation(name: str, alphas: list[float], betas: list[float]) -> Activation:
    """Parse one activation; functions with parameters take theirs from the front of the lists."""
    if name.lower() not in _ACTIVATIONS:
        known = ", ".join(op for op, _, _ in _ACTIVATIONS.values())
        raise ValueError(f"activation '{name}' is not supported (supported: {known})")
    op, alpha, beta = _ACTIVATIONS[name.lower()]
    attrs = {}
    for param, values in ((alpha, alphas), (beta, betas)):
        if param is not None:
            attrs[param[0]] = float(values.pop(0)) if values else param[1]
    return Activation(op, attrs)


@dataclass(frozen=True)
class State:
    h: str | None
    c: str | None = None


#: (projected input of the step, state, name prefix of the step) -> new state
Step = Callable[[str, State, str], State]


@dataclass(frozen=True)
class Cell:
    op_type: str
    gates: int
    activations: tuple[str, ...]
    outputs: int
    flags: tuple[str, ...]
    input_bias: Callable[[Recurrence], np.ndarray | None]
    stepper: Callable[[Writer, Recurrence, int, str], Step]


class _Ops:
    """The per-step ops of one direction of one node: activations, clip, constants in its dtype."""

    def __init__(self, w: Writer, rec: Recurrence, direction: int) -> None:
        self.w, self.rec = w, rec
        self.acts = rec.activations[direction]

    def act(self, index: int, x: str, name: str, clip: bool = True) -> str:
        if clip and self.rec.clip is not None:
            x = self.w.clip(x, self.rec.clip, self.rec.dtype, f"{name}_clipped")
        a = self.acts[index]
        return self.w.op(a.op, [x], name, **a.attrs)

    def const(self, name: str, value: np.ndarray) -> str:
        return self.w.const(name, np.asarray(value, dtype=self.rec.dtype))

    def add(self, a: str | None, b: str | None, name: str) -> str | None:
        """a + b, where None is zero."""
        if a is None or b is None:
            return b if a is None else a
        return self.w.op("Add", [a, b], name)

    def mul(self, a: str, b: str, name: str) -> str:
        return self.w.op("Mul", [a, b], name)

    def matmul(self, h: str | None, weight: str, name: str) -> str | None:
        return None if h is None else self.w.op("MatMul", [h, weight], name)

    def one_minus(self, x: str, name: str) -> str:
        return self.w.op("Sub", [self.const("one", np.ones((), self.rec.dtype)), x], name)


def _summed_bias(rec: Recurrence) -> np.ndarray | None:
    """W and R biases of every gate, added once to the input projection."""
    b = rec.weights["B"]
    if b is None:
        return None
    half = b.shape[1] // 2
    return b[:, :half] + b[:, half:]


def _lstm_step(w: Writer, rec: Recurrence, d: int, prefix: str) -> Step:
    ops, hidden = _Ops(w, rec, d), rec.hidden
    r_t = w.const(f"{prefix}/R_T", rec.weights["R"][d].T)
    p = rec.weights["P"]
    peep = (
        None
        if p is None
        else [ops.const(f"{prefix}/P_{g}", p[d, k * hidden : (k + 1) * hidden]) for k, g in enumerate("iof")]
    )
    coupled = bool(rec.attrs["input_forget"])

    def step(x: str, s: State, n: str) -> State:
        gates = ops.add(x, ops.matmul(s.h, r_t, f"{n}/h_proj"), f"{n}/gates")
        i, o, f, g = w.split(gates, [hidden] * 4, 2, [f"{n}/{k}_pre" for k in "iofg"])
        if peep is not None and s.c is not None:
            i = ops.add(i, ops.mul(s.c, peep[0], f"{n}/i_peep"), f"{n}/i_pre_peep")
            f = ops.add(f, ops.mul(s.c, peep[2], f"{n}/f_peep"), f"{n}/f_pre_peep")
        i = ops.act(0, i, f"{n}/i")
        c = ops.mul(i, ops.act(1, g, f"{n}/g"), f"{n}/i_g")
        if s.c is not None:  # the forget gate only scales the previous cell
            f = ops.one_minus(i, f"{n}/f") if coupled else ops.act(0, f, f"{n}/f")
            c = ops.add(ops.mul(f, s.c, f"{n}/f_c"), c, f"{n}/c")
        if peep is not None:
            o = ops.add(o, ops.mul(c, peep[1], f"{n}/o_peep"), f"{n}/o_pre_peep")
        o = ops.act(0, o, f"{n}/o")
        return State(ops.mul(o, ops.act(2, c, f"{n}/c_act", clip=False), f"{n}/h"), c)

    return step


def _gru_bias(rec: Recurrence) -> np.ndarray | None:
    """z and r take both biases; h takes R's only when the reset gate is applied after R (lbr=0)."""
    b = rec.weights["B"]
    if b is None:
        return None
    hidden = rec.hidden
    summed = _summed_bias(rec)
    if rec.attrs["linear_before_reset"]:
        summed[:, 2 * hidden :] = b[:, 2 * hidden : 3 * hidden]
    return summed


def _gru_step(w: Writer, rec: Recurrence, d: int, prefix: str) -> Step:
    ops, hidden = _Ops(w, rec, d), rec.hidden
    r = rec.weights["R"][d]
    after_reset = bool(rec.attrs["linear_before_reset"])
    b = rec.weights["B"]
    rb_h = None if b is None or not after_reset else ops.const(f"{prefix}/Rb_h", b[d, 5 * hidden :])
    r_t = w.const(f"{prefix}/R_T", r.T) if after_reset else None
    r_zr_t = None if after_reset else w.const(f"{prefix}/R_zr_T", r[: 2 * hidden].T)
    r_h_t = None if after_reset else w.const(f"{prefix}/R_h_T", r[2 * hidden :].T)

    def split_zr_h(x: str | None, n: str) -> tuple[str | None, str | None]:
        return (
            (None, None) if x is None else tuple(w.split(x, [2 * hidden, hidden], 2, [f"{n}_zr", f"{n}_h"]))
        )

    def step(x: str, s: State, n: str) -> State:
        x_zr, x_h = split_zr_h(x, f"{n}/x")
        if after_reset:  # h_proj = h·R^T, and the h gate's part gets R's bias before the reset
            h_zr, h_h = split_zr_h(ops.matmul(s.h, r_t, f"{n}/h_proj"), f"{n}/h")
            h_h = ops.add(h_h, rb_h, f"{n}/h_h_bias")
        else:
            h_zr = ops.matmul(s.h, r_zr_t, f"{n}/h_zr")
        z, r_gate = w.split(ops.add(x_zr, h_zr, f"{n}/zr"), [hidden, hidden], 2, [f"{n}/z_pre", f"{n}/r_pre"])
        z = ops.act(0, z, f"{n}/z")
        r_gate = ops.act(0, r_gate, f"{n}/r")
        if after_reset:
            reset = None if h_h is None else ops.mul(r_gate, h_h, f"{n}/r_h")
        elif s.h is None:
            reset = None
        else:
            reset = ops.matmul(ops.mul(r_gate, s.h, f"{n}/r_h"), r_h_t, f"{n}/r_h_proj")
        candidate = ops.act(1, ops.add(x_h, reset, f"{n}/h_pre"), f"{n}/candidate")
        h = ops.mul(ops.one_minus(z, f"{n}/one_minus_z"), candidate, f"{n}/update")
        if s.h is not None:
            h = ops.add(h, ops.mul(z, s.h, f"{n}/keep"), f"{n}/h")
        return State(h)

    return step


def _rnn_step(w: Writer, rec: Recurrence, d: int, prefix: str) -> Step:
    ops = _Ops(w, rec, d)
    r_t = w.const(f"{prefix}/R_T", rec.weights["R"][d].T)

    def step(x: str, s: State, n: str) -> State:
        return State(ops.act(0, ops.add(x, ops.matmul(s.h, r_t, f"{n}/h_proj"), f"{n}/pre"), f"{n}/h"))

    return step


CELLS: dict[str, Cell] = {
    "LSTM": Cell("LSTM", 4, ("Sigmoid", "Tanh", "Tanh"), 3, ("input_forget",), _summed_bias, _lstm_step),
    "GRU": Cell("GRU", 3, ("Sigmoid", "Tanh"), 2, ("linear_before_reset",), _gru_bias, _gru_step),
    "RNN": Cell("RNN", 1, ("Tanh",), 2, (), _summed_bias, _rnn_step),
}
