"""Data-movement ops: the integers move, the scale stays. concat brings its parts to one scale.

A reshape (flatten, squeeze, expand_dims) that keeps the channel axis whole, with the same
elements before and after it, carries a per-channel scale to that axis: a dense layer's int32
accumulators reshaped on their way to the next op keep their per-channel scales (collapsing them
takes an int64 requantize of every element, which AVX2 has no vector multiply for). Any other
reshape, and a slice, collapses the scale to per-tensor first; permute_dims permutes the scale with
the data.
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


def channel_scale_after_reshape(
    scale: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> np.ndarray | None:
    """The per-channel `scale` of a tensor of `in_shape` as a scale of the same elements reshaped
    (row-major) to `out_shape`, or None when the reshape splits or merges the channel axis."""
    (axis,) = [a for a, n in enumerate(scale.shape) if n > 1] or [None]
    if axis is None:
        return None
    before, size, after = int(np.prod(in_shape[:axis])), in_shape[axis], int(np.prod(in_shape[axis + 1 :]))
    for b, n in enumerate(out_shape):
        if n == size and int(np.prod(out_shape[:b])) == before and int(np.prod(out_shape[b + 1 :])) == after:
            shape = [1] * len(out_shape)
            shape[b] = size
            return scale.reshape(shape)
    return None


def _reshape(ctx: RealizeContext, node: Node) -> QTensor:
    q = ctx.as_quantized(node.call.args[0])
    if q.per_channel:
        scale = channel_scale_after_reshape(q.scale, shape_of(node.call.args[0]), shape_of(node.var))
        if scale is not None:
            return QTensor(ctx.em.emit(_reissue(ctx, node, q.expr)), q.dtype, scale)
    return _move(ctx, node)


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


for _op in ("reshape", "flatten", "squeeze", "expand_dims"):
    register(OpRule(_op, "follow", _reshape, accepts=_rank_preserving))
register(OpRule("strided_slice", "follow", _move, accepts=_rank_preserving))
register(OpRule("image.resize2d", "follow", _move, accepts=_resize_accepts))
register(OpRule("permute_dims", "follow", _permute))
register(OpRule("split", "follow", _split))
register(OpRule("concat", "follow", _concat, activation_output=True))
