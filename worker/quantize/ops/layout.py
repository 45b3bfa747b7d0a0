"""Data-movement ops: the integers move, the scale stays. concat brings its parts to one scale.

A per-channel scale cannot follow a reshape or slice through its channel axis, so those ops
collapse it to per-tensor first; permute_dims permutes the scale with the data.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.relax import op as R

from worker.quantize.graph import Node, shape_of
from worker.quantize.ops import register
from worker.quantize.ops.base import OpRule, RealizeContext
from worker.quantize.qtensor import INT_BITS, QTensor


def _reissue(ctx: RealizeContext, node: Node, first: relax.Expr) -> relax.Expr:
    call = node.call
    return relax.Call(call.op, [first, *call.args[1:]], call.attrs, call.ty_args)


def _move(ctx: RealizeContext, node: Node) -> QTensor:
    q = ctx.em.per_tensor(ctx.as_quantized(node.call.args[0]))
    return q.with_expr(ctx.em.emit(_reissue(ctx, node, q.expr)))


def _permute(ctx: RealizeContext, node: Node) -> QTensor:
    q = ctx.as_quantized(node.call.args[0])
    scale = q.scale
    if q.per_channel:
        axes = node.call.attrs.axes
        scale = np.transpose(scale, None if axes is None else [int(a) for a in axes])
    return QTensor(ctx.em.emit(_reissue(ctx, node, q.expr)), q.dtype, scale)


def _split(ctx: RealizeContext, node: Node) -> list[QTensor]:
    q = ctx.em.per_tensor(ctx.as_quantized(node.call.args[0]))
    parts = ctx.em.emit(_reissue(ctx, node, q.expr))
    count = len(node.var.ty.fields)
    return [q.with_expr(ctx.em.emit(relax.TupleGetItem(parts, i))) for i in range(count)]


def _concat(ctx: RealizeContext, node: Node) -> QTensor:
    fields = ctx.tuple_fields(node.call.args[0])
    parts = [ctx.as_quantized(f) for f in fields]
    dtype = max((p.dtype for p in parts), key=lambda d: INT_BITS[d])
    parts = ctx.em.unify(parts, dtype)
    out = ctx.em.emit(R.concat(relax.Tuple([p.expr for p in parts]), axis=int(node.call.attrs.axis)))
    return ctx.activation(QTensor(out, dtype, parts[0].scale), node)


def _resize_accepts(node: Node) -> str | None:
    a = node.call.attrs
    if str(a.method) != "nearest_neighbor":
        return f"resize method {a.method} (only nearest_neighbor keeps integers exact)"
    return None


def _rank_preserving(node: Node) -> str | None:
    return None if shape_of(node.var) else "scalar result"


for _op in ("reshape", "flatten", "squeeze", "expand_dims", "strided_slice"):
    register(OpRule(_op, "follow", _move, accepts=_rank_preserving))
register(OpRule("image.resize2d", "follow", _move, accepts=_resize_accepts))
register(OpRule("permute_dims", "follow", _permute))
register(OpRule("split", "follow", _split))
register(OpRule("concat", "follow", _concat, activation_output=True))
