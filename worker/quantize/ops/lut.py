"""Element-wise float functions of an int8 tensor as 256-entry lookup tables: integral end to end.

A function of one int8 input has 256 possible inputs, so the table maps every input level (at the
input's calibrated scale) to the output level: a gather, no float at run time. The output scale
comes from the output's calibrated threshold, capped at the table's own range (the input scale
fixes the largest |f| any input can give). Every entry whose float value lies on the output grid is
within half an output step of the float function; the entries beyond it (input levels whose output
the calibration never saw reach so far) are clipped, and counted apart, so the reported error is
the table's rounding and the clipping is named rather than folded into one figure. A per-channel
constant (PReLU's slope) gives one table per channel, gathered at channel * 256 + level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm.relax import op as R

from worker.quantize.graph import Node
from worker.quantize.ops import register
from worker.quantize.ops.base import OpRule, RealizeContext, TableInfo
from worker.quantize.ops.elementwise import chain_of, evaluate_call
from worker.quantize.qtensor import QTensor, qmax, scale_for

_LEVELS = 256  # int8: -128 .. 127


@dataclass(frozen=True)
class Table:
    """entries: (channels, 256) int levels, row c for channel c; `at` is the broadcast shape of
    the channel rows against the tensor (all 1s for one table). max_abs_error is over the entries
    on the output grid; clipped_levels counts the reachable entries beyond it."""

    entries: np.ndarray
    at: tuple[int, ...]
    output_scale: float
    max_abs_error: float
    clipped_levels: int


def _function(node: Node, x: np.ndarray) -> np.ndarray:
    if node.op == "tvmq.elementwise":
        return chain_of(node.call).evaluate(x)
    return evaluate_call(node.call, {node.call.args[0]: x})


def function_name(node: Node) -> str:
    return chain_of(node.call).function if node.op == "tvmq.elementwise" else node.op


def build_table(node: Node, input_scale: float, nbit: int, output_threshold: float = math.inf) -> Table:
    """The table of `node`'s function for inputs at `input_scale`, outputs on an nbit grid: the
    calibrated output threshold, or the table's own range where that is smaller (no entry clips)."""
    ndim = len(node.call.args[0].ty.shape)
    levels = np.arange(-_LEVELS // 2, _LEVELS // 2, dtype=np.float64)
    values = np.asarray(_function(node, levels.reshape((_LEVELS,) + (1,) * ndim) * input_scale))
    values = np.broadcast_to(values, (_LEVELS, *values.shape[1:]))
    at = values.shape[1:]
    rows = values.reshape(_LEVELS, -1).T  # (channels, 256)
    limit = qmax(nbit)
    reachable = rows[:, _LEVELS // 2 - limit : _LEVELS // 2 + limit + 1]
    finite = np.isfinite(reachable)
    top = float(np.max(np.abs(reachable[finite]), initial=0.0))
    scale = min(top / limit, float(scale_for(output_threshold, nbit))) if top > 0 else 1.0
    rows = np.nan_to_num(rows, nan=0.0, posinf=top, neginf=-top)
    entries = np.clip(np.round(rows / scale), -limit, limit)
    error = np.abs(entries * scale - rows)[:, _LEVELS // 2 - limit : _LEVELS // 2 + limit + 1]
    on_grid = finite & (np.abs(reachable) <= (limit + 0.5) * scale)
    clipped = int(np.count_nonzero(finite & ~on_grid))
    return Table(entries, tuple(at), scale, float(np.max(error[on_grid], initial=0.0)), clipped)


def _realize_table(ctx: RealizeContext, node: Node) -> QTensor:
    q = ctx.as_input(node.call.args[0])
    nbit = ctx.qconfig.nbit_input
    table = build_table(node, float(q.scale), nbit, ctx.threshold(node.var))
    channels = table.entries.shape[0]
    offsets = (np.arange(channels) * _LEVELS + _LEVELS // 2).reshape(table.at)
    index = R.add(R.astype(q.expr, "int32"), ctx.em.const(offsets, "int32"))
    out = ctx.em.emit(R.take(ctx.em.const(table.entries.reshape(-1), "int8"), index, axis=0))
    ctx.tables[node] = TableInfo(
        function=function_name(node),
        form=f"lookup table ({channels} x {_LEVELS} int8)" if channels > 1 else "lookup table",
        input_scale=float(q.scale),
        output_scale=table.output_scale,
        max_abs_error=table.max_abs_error,
        clipped_levels=table.clipped_levels,
    )
    return QTensor(out, "int8", np.asarray(table.output_scale))


def _table_rule(op: str, role: str = "follow") -> OpRule:
    return register(OpRule(op, role, _realize_table, lut=_function))


# sigmoid and tanh open quantized regions (Relay quantized them as compute ops); the others are
# only worth a table inside a region
for _op in ("sigmoid", "tanh"):
    _table_rule(_op, "compute")
for _op in (
    "nn.leakyrelu",
    "nn.prelu",
    "nn.gelu",
    "nn.gelu_tanh",
    "nn.silu",
    "nn.softplus",
    "nn.selu",
    "erf",
    "exp",
    "tvmq.elementwise",
):
    _table_rule(_op)
