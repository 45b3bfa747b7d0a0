"""Unary float functions on int8 as 256-entry lookup tables: integral end to end.

The table maps every int8 input level (at the input's scale) to the int8 output level (at the
output scale): a gather, no float at run time. Bounded functions (sigmoid, tanh) have a known
output range; others calibrate theirs.
"""

from __future__ import annotations

import numpy as np
from tvm.relax import op as R

from worker.quantize.graph import Node
from worker.quantize.ops import register
from worker.quantize.ops.base import OpRule, RealizeContext
from worker.quantize.qtensor import QTensor, qmax, scale_for


def _realize_lut(ctx: RealizeContext, node: Node) -> QTensor:
    from worker.quantize.ops import rule_for

    rule = rule_for(node.op)
    q = ctx.as_input(node.call.args[0])
    nbit = ctx.qconfig.nbit_input
    threshold = rule.output_range if rule.output_range is not None else ctx.threshold(node.var)
    out_scale = scale_for(threshold, nbit)
    levels = np.arange(-128, 128, dtype=np.float64)
    table = np.clip(np.round(rule.lut(levels * float(q.scale), node) / out_scale), -qmax(nbit), qmax(nbit))
    index = R.add(R.astype(q.expr, "int32"), ctx.em.const(128, "int32"))
    out = ctx.em.emit(R.take(ctx.em.const(table, "int8"), index, axis=0))
    return QTensor(out, "int8", out_scale)


def _sigmoid(x: np.ndarray, node: Node) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _tanh(x: np.ndarray, node: Node) -> np.ndarray:
    return np.tanh(x)


def _leaky_relu(x: np.ndarray, node: Node) -> np.ndarray:
    return np.where(x > 0, x, float(node.call.attrs.alpha) * x)


register(OpRule("sigmoid", "compute", _realize_lut, lut=_sigmoid, output_range=1.0))
register(OpRule("tanh", "compute", _realize_lut, lut=_tanh, output_range=1.0))
register(OpRule("nn.leakyrelu", "follow", _realize_lut, lut=_leaky_relu, calibrate_output=True))
