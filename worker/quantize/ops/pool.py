"""Pooling. max_pool keeps the integers as they are; average pools stay quantized (Relay fell back
to float) as an int32 sum whose scale absorbs the 1/count — no division for global pools.

Traps avoided: Relax's mean/avg_pool2d on int8 accumulate in int8 and overflow, so operands are
widened to int32 first; avg_pool2d divides with truncation, so its operand is shifted left 8 bits
first (scale / 256) and the truncation costs at most 1/256 of a quantization step. LegalizeOps
turns an int32 avg_pool2d into an int64 result although Relax types it int32, so the next int32
op fails to build ("Binary operators must have the same datatype"): the pool is followed by an
explicit cast back to int32 (a no-op where the legalization is already int32). `mean` is realized
as an int32 `sum` and never meets that legalization.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax
from tvm.relax import op as R

from worker.quantize.graph import Node, shape_of
from worker.quantize.ops import register
from worker.quantize.ops.base import OpRule, RealizeContext
from worker.quantize.qtensor import QTensor

_AVG_POOL_FRACTION_BITS = 8


def _pool(op: Callable[..., relax.Expr], x: relax.Expr, node: Node) -> relax.Expr:
    """The same pooling call as the float model's, on integer data."""
    a = node.call.attrs
    return op(
        x,
        a.pool_size,
        a.strides,
        a.padding,
        a.dilation,
        bool(a.ceil_mode),
        bool(a.count_include_pad),
        str(a.layout),
        str(a.out_layout),
    )


def _max_pool(ctx: RealizeContext, node: Node) -> QTensor:
    q = ctx.as_quantized(node.call.args[0])
    return q.with_expr(ctx.em.emit(_pool(R.nn.max_pool2d, q.expr, node)))


def _avg_pool(ctx: RealizeContext, node: Node) -> QTensor:
    q = ctx.em.cast(ctx.as_input(node.call.args[0]), "int32")
    shifted = R.left_shift(q.expr, ctx.em.const(_AVG_POOL_FRACTION_BITS, "int32"))
    out = ctx.em.emit(R.astype(_pool(R.nn.avg_pool2d, shifted, node), "int32"))
    return QTensor(out, "int32", q.scale / 2**_AVG_POOL_FRACTION_BITS)


def _sum_over(ctx: RealizeContext, node: Node, axes: list[int], keepdims: bool) -> QTensor:
    q = ctx.em.cast(ctx.as_input(node.call.args[0]), "int32")
    in_shape = shape_of(node.call.args[0])
    count = int(np.prod([in_shape[a] for a in axes]))
    out = ctx.em.emit(R.sum(q.expr, axis=axes, keepdims=keepdims))
    return QTensor(out, "int32", q.scale / count)


def _axes(node: Node) -> list[int]:
    ndim = len(shape_of(node.call.args[0]))
    axis = node.call.attrs.axis
    return list(range(ndim)) if axis is None else [int(a) % ndim for a in axis]


def _mean(ctx: RealizeContext, node: Node) -> QTensor:
    return _sum_over(ctx, node, _axes(node), bool(node.call.attrs.keepdims))


def _adaptive_accepts(node: Node) -> str | None:
    a = node.call.attrs
    if str(a.layout) != "NCHW" or shape_of(node.var)[2:] != (1, 1):
        return "only global (output 1x1, NCHW) adaptive average pooling"
    return None


def _adaptive(ctx: RealizeContext, node: Node) -> QTensor:
    return _sum_over(ctx, node, [2, 3], keepdims=True)


def _pool_accepts(node: Node) -> str | None:
    return None if str(node.call.attrs.layout) == "NCHW" else "only NCHW pooling"


register(OpRule("nn.max_pool2d", "follow", _max_pool, accepts=_pool_accepts))
register(OpRule("nn.avg_pool2d", "follow", _avg_pool, accepts=_pool_accepts))
register(OpRule("mean", "follow", _mean))
register(OpRule("nn.adaptive_avg_pool2d", "follow", _adaptive, accepts=_adaptive_accepts))
