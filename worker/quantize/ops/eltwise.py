"""add / subtract / multiply of quantized tensors, with constants or with each other.

Sums are done in int32 at a common scale (an int8 add would wrap instead of saturating); a
constant summand (a bias) is quantized to int32 at the other operand's scale, per channel if that
operand is per-channel. Products take int8 operands (so int32 cannot overflow) and give int32 at
the product of the scales.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax
from tvm.relax import op as R

from worker.quantize.graph import Node, const_value, is_const, shape_of
from worker.quantize.ops import register
from worker.quantize.ops.base import OpRule, RealizeContext, fit_scale
from worker.quantize.qtensor import Emitter, QTensor

_INT32_LIMIT = 2**31 - 1

#: A difference whose calibrated range is below this fraction of its larger operand's keeps fewer
#: than 1/8 of the operands' int8 levels: more than 3 of 7 magnitude bits cancel away.
CANCELLATION_RATIO = 1 / 8


def constant_at(em: Emitter, value: np.ndarray, scale: np.ndarray, ndim: int) -> QTensor:
    """A constant summand (a bias) as int32 at `scale`."""
    scale = fit_scale(scale, ndim)
    q = np.round(value.astype(np.float64) / scale)
    if np.any(np.abs(q) > _INT32_LIMIT):
        q = np.clip(q, -_INT32_LIMIT, _INT32_LIMIT)
    return QTensor(em.const(q, "int32"), "int32", scale)


def _additive(op):
    def realize(ctx: RealizeContext, node: Node) -> QTensor:
        lhs, rhs = node.call.args[:2]
        ndim = len(shape_of(node.var))
        if is_const(lhs) or is_const(rhs):
            tensor = ctx.em.cast(ctx.as_quantized(rhs if is_const(lhs) else lhs), "int32")
            const = constant_at(ctx.em, const_value(lhs if is_const(lhs) else rhs), tensor.scale, ndim)
            operands = [const, tensor] if is_const(lhs) else [tensor, const]
        else:
            operands = ctx.em.unify([ctx.as_quantized(lhs), ctx.as_quantized(rhs)], "int32")
        out = ctx.em.emit(op(operands[0].expr, operands[1].expr))
        return ctx.activation(QTensor(out, "int32", fit_scale(operands[0].scale, ndim)), node)

    return realize


def _constant_axis(node: Node, index: int) -> int | None:
    """Per-channel axis of a constant factor: its only non-1 dim, counted in the output's rank."""
    shape = shape_of(node.call.args[index])
    big = [i for i, d in enumerate(shape) if d > 1]
    return big[0] if len(big) == 1 else None


def _multiply_weights(node: Node) -> dict[int, int | None]:
    return {i: _constant_axis(node, i) for i, arg in enumerate(node.call.args[:2]) if is_const(arg)}


def _multiply(ctx: RealizeContext, node: Node) -> QTensor:
    weights = _multiply_weights(node)
    ndim = len(shape_of(node.var))
    factors = [
        ctx.as_weight(arg, weights[i]) if i in weights else ctx.as_input(arg)
        for i, arg in enumerate(node.call.args[:2])
    ]
    a, b = (ctx.em.cast(f, "int32") for f in factors)
    out = ctx.em.emit(R.multiply(a.expr, b.expr))
    scale = fit_scale(a.scale, ndim) * fit_scale(b.scale, ndim)
    return ctx.activation(QTensor(out, "int32", fit_scale(scale, ndim)), node)


def _multiply_accepts(node: Node) -> str | None:
    if all(is_const(a) for a in node.call.args[:2]):
        return "both factors constant"
    return None


def _cancellation(node: Node, range_of: Callable[[relax.Expr], float]) -> str | None:
    """Catastrophic cancellation: nearly equal operands, so the difference is tiny next to them."""
    operands = max(range_of(arg) for arg in node.call.args[:2])
    result = range_of(node.var)
    if operands <= 0 or result >= operands * CANCELLATION_RATIO:
        return None
    ratio = f"1/{operands / result:.0f}" if result > 0 else "0"
    return (
        f"cancellation: the difference's calibrated range {result:.3g} is {ratio} of its operands' "
        f"{operands:.3g} (nearly equal operands lose their precision in int8); kept float"
    )


def _divide_accepts(node: Node) -> str | None:
    lhs, rhs = node.call.args[:2]
    if is_const(lhs) or not is_const(rhs):
        return "only division by a constant"
    divisor = const_value(rhs)
    if divisor.size > 1 and _constant_axis(node, 1) is None:
        return "divisor varies along more than one axis"
    if np.any(divisor <= 0) or not np.all(np.isfinite(divisor)):
        return "divisor not positive and finite"
    return None


def _divide(ctx: RealizeContext, node: Node) -> QTensor:
    """x / c is x at scale s / c: the integers stay, only the scale changes (exact)."""
    q = ctx.as_quantized(node.call.args[0])
    ndim = len(shape_of(node.var))
    divisor = const_value(node.call.args[1]).astype(np.float64)
    return q.with_expr(q.expr, scale=fit_scale(fit_scale(q.scale, ndim) / fit_scale(divisor, ndim), ndim))


register(OpRule("add", "follow", _additive(R.add), activation_output=True))
register(
    OpRule("subtract", "follow", _additive(R.subtract), activation_output=True, float_safety=_cancellation)
)
register(
    OpRule(
        "multiply",
        "compute",
        _multiply,
        accepts=_multiply_accepts,
        weights=_multiply_weights,
        activation_output=True,
    )
)
register(OpRule("divide", "follow", _divide, accepts=_divide_accepts))
