"""matmul: dense (constant weight, the Gemm/MatMul of a classifier head) or activation x activation."""

from __future__ import annotations

from math import prod

from tvm import relax
from tvm.relax import op as R

from worker.quantize.graph import Node, is_const, shape_of
from worker.quantize.ops import register
from worker.quantize.ops.base import OpRule, RealizeContext, channel_scale
from worker.quantize.qtensor import QTensor


def _is_dense(node: Node) -> bool:
    rhs = node.call.args[1]
    return is_const(rhs) and len(shape_of(rhs)) == 2


def _weights(node: Node) -> dict[int, int | None]:
    return {1: 1} if _is_dense(node) else {}


def _accepts(node: Node) -> str | None:
    lhs, rhs = node.call.args[:2]
    if is_const(lhs):
        return "constant left-hand side"
    if is_const(rhs) and not _is_dense(node):
        return "constant right-hand side that is not a 2-D weight"
    if len(shape_of(lhs)) < 2 or len(shape_of(rhs)) < 2:
        return "vector operand (matrix-vector products stay float)"
    return None


def _matmul(ctx: RealizeContext, node: Node) -> QTensor:
    lhs, rhs = node.call.args[:2]
    a = ctx.as_input(lhs)
    b = ctx.as_weight(rhs, axis=1) if _is_dense(node) else ctx.as_input(rhs)
    out = ctx.em.emit(R.matmul(a.expr, b.expr, out_dtype="int32"))
    ndim = len(shape_of(node.var))
    return QTensor(out, "int32", a.scale * channel_scale(b.scale, ndim, ndim - 1))


def _macs(call: relax.Call, out_shape: tuple[int, ...]) -> int:
    """Every output element sums over the contracted (last) axis of the left-hand side."""
    return prod(out_shape) * shape_of(call.args[0])[-1]


register(
    OpRule(
        "matmul",
        "compute",
        _matmul,
        accepts=_accepts,
        layer=lambda node: "dense" if _is_dense(node) else None,
        weights=_weights,
        macs=_macs,
    )
)
