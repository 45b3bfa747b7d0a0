"""relu, clip and maximum/minimum against a constant (ONNX Clip/ReLU6 import as maximum + minimum,
HardSigmoid as clip).

Monotonic ops commute with a positive scale, so they run on the integers directly; the constant
bound is quantized at the tensor's own scale (per channel if the tensor is per-channel).
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op as R

from worker.quantize.graph import Node, const_value, is_const, shape_of
from worker.quantize.ops import register
from worker.quantize.ops.base import OpRule, RealizeContext, fit_scale
from worker.quantize.ops.elementwise import scalar_operand
from worker.quantize.qtensor import INT_BITS, Emitter, QTensor


def _relu(ctx: RealizeContext, node: Node) -> QTensor:
    q = ctx.as_quantized(node.call.args[0])
    return q.with_expr(ctx.em.emit(R.nn.relu(q.expr)))


def _bound_accepts(node: Node) -> str | None:
    lhs, rhs = node.call.args[:2]
    if is_const(lhs) == is_const(rhs):
        return "needs exactly one constant bound"
    return None


def _quantized_bound(q: QTensor, bound: np.ndarray | float, ndim: int) -> relax.Expr:
    """A float bound on the integer grid of `q` (per channel when `q` is)."""
    limit = 2 ** (INT_BITS[q.dtype] - 1) - 1
    qb = np.clip(np.round(np.asarray(bound, dtype=np.float64) / fit_scale(q.scale, ndim)), -limit, limit)
    return Emitter.const(qb, q.dtype)


def _bound(op):
    def realize(ctx: RealizeContext, node: Node) -> QTensor:
        lhs, rhs = node.call.args[:2]
        tensor, bound = (rhs, lhs) if is_const(lhs) else (lhs, rhs)
        q = ctx.as_quantized(tensor)
        ndim = len(shape_of(node.var))
        return q.with_expr(ctx.em.emit(op(q.expr, _quantized_bound(q, const_value(bound), ndim))))

    return realize


def _clip(ctx: RealizeContext, node: Node) -> QTensor:
    x, low, high = node.call.args[:3]
    q = ctx.as_quantized(x)
    ndim = len(shape_of(node.var))
    lower = R.maximum(q.expr, _quantized_bound(q, scalar_operand(low), ndim))
    return q.with_expr(ctx.em.emit(R.minimum(lower, _quantized_bound(q, scalar_operand(high), ndim))))


register(OpRule("nn.relu", "follow", _relu))
register(OpRule("maximum", "follow", _bound(R.maximum), accepts=_bound_accepts))
register(OpRule("minimum", "follow", _bound(R.minimum), accepts=_bound_accepts))
register(OpRule("clip", "follow", _clip))
