"""Softmax and layer normalisation in integer arithmetic (I-BERT's idea: integer statistics, a table
or an integer algorithm for the transcendental part, no float at run time).

softmax: x − max(x) over the axis is an integer in [−254, 0] on the int8 grid, so exp of it is a
255-entry int32 table (2^F fixed point); the sum runs in int32 and the division is an integer
division rounding half up, giving probabilities on a 1/127 grid (1.0 is representable).

layer_norm: from int8 levels q (N per row), N·Σq² − (Σq)² = N²·var exactly (int64), eps joins it
at the input's scale, an integer Newton iteration takes the square root r of it times 4^m, and
2^m·(N·q − Σq) / r is the normalised value (2^-K fixed point, rounded). γ is quantized like a
weight and β at the product's scale, as for a conv's bias; the int32 result keeps the per-channel
scale of γ.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax, tirx
from tvm.relax import op as R
from tvm.script import tirx as T

from worker.quantize.graph import Node, const_value, is_const, shape_of
from worker.quantize.ops import register
from worker.quantize.ops.base import OpRule, RealizeContext, TableInfo, channel_scale
from worker.quantize.ops.eltwise import constant_at
from worker.quantize.qtensor import QTensor, qmax

_INT32_BITS = 31
#: headroom of the spread's square root: spread * 4^m below 2^62
_INT64_BITS = 62
#: probabilities on a 1/127 grid: int8 with 1.0 exact
_PROB_LEVELS = 127
#: fraction bits of the normalised value (|value| <= sqrt(N))
_NORM_BITS = 10


def _axis(node: Node) -> int:
    return int(node.call.attrs.axis) % len(shape_of(node.var))


def _exp_bits(length: int) -> int:
    """Fraction bits of the exp table such that `length` entries of at most 2^F sum in int32 and
    e * 2 * 127 stays in int32."""
    return min(16, _INT32_BITS - 1 - math.ceil(math.log2(max(length, 2))))


def _softmax_accepts(node: Node) -> str | None:
    length = shape_of(node.var)[_axis(node)]
    if _exp_bits(length) < 8:
        return f"softmax over {length} elements (the int32 sum needs at most 2^22)"
    return None


def _softmax(ctx: RealizeContext, node: Node) -> QTensor:
    q = ctx.as_input(node.call.args[0])
    axis = _axis(node)
    bits = _exp_bits(shape_of(node.var)[axis])
    steps = 2 * qmax(ctx.qconfig.nbit_input) + 1
    table = np.round(np.exp(-np.arange(steps) * float(q.scale)) * 2.0**bits)
    x = R.astype(q.expr, "int32")
    below = ctx.em.emit(R.subtract(R.max(x, axis=[axis], keepdims=True), x))  # 0 .. steps-1
    e = ctx.em.emit(R.take(ctx.em.const(table, "int32"), below, axis=0))
    total = ctx.em.emit(R.sum(e, axis=[axis], keepdims=True))
    numerator = R.add(R.multiply(e, ctx.em.const(2 * _PROB_LEVELS, "int32")), total)
    p = R.floor_divide(numerator, R.multiply(total, ctx.em.const(2, "int32")))
    out = ctx.em.emit(R.astype(R.clip(p, 0, _PROB_LEVELS), "int8"))
    ctx.tables[node] = TableInfo(
        function="softmax",
        form=f"integer softmax: exp table ({steps} x int32, 2^-{bits}), int32 sum, integer division",
        input_scale=float(q.scale),
        output_scale=1.0 / _PROB_LEVELS,
    )
    return QTensor(out, "int8", np.asarray(1.0 / _PROB_LEVELS))


def _norm_axes(node: Node) -> list[int]:
    ndim = len(shape_of(node.var))
    return sorted(int(a) % ndim for a in node.call.attrs.axes)


def layer_norm_misfit(shape: tuple[int, ...], axes: list[int]) -> str | None:
    """Why the integer layer norm cannot normalise a tensor of `shape` over `axes` (non-negative,
    sorted), or None; asked by the rule and by the fold of decomposed layer norms alike."""
    ndim = len(shape)
    if axes != list(range(ndim - len(axes), ndim)):
        return f"normalised axes {axes} are not the trailing ones"
    if np.prod([shape[a] for a in axes]) > 2**16:
        return "more than 65536 normalised elements (int32 sums of squares)"
    return None


def _layer_norm_accepts(node: Node) -> str | None:
    if not all(is_const(a) for a in node.call.args[1:3]):
        return "gamma / beta are not constants"
    return layer_norm_misfit(shape_of(node.var), _norm_axes(node))


def _isqrt_func(start: int, iterations: int, length: int) -> tirx.PrimFunc:
    """floor(sqrt(n)) of every int64 1 <= n, by Newton's iteration from `start` (a power of two at or
    above the largest root), kept monotone: x = min(x, (x + n // x) / 2). A loop in one TIR block:
    as Relax ops, each step reads x three times, and inlining the fused chain grows as 3^steps.
    The length is static: FuseTIR cannot map a symbolic buffer onto the reshape fused before it."""

    @T.prim_func(private=True, s_tir=True)
    def isqrt(a: T.handle, b: T.handle) -> None:
        T.func_attr({"tirx.noalias": True})
        n = T.match_buffer(a, (T.int64(length),), "int64")
        x = T.match_buffer(b, (T.int64(length),), "int64")
        for i in range(T.int64(length)):
            with T.sblock("isqrt"):
                vi = T.axis.spatial(T.int64(length), i)
                T.reads(n[vi])
                T.writes(x[vi])
                x[vi] = T.int64(start)
                for _ in range(iterations):
                    x[vi] = T.min(x[vi], (x[vi] + T.floordiv(n[vi], x[vi])) >> T.int64(1))

    return isqrt


def _isqrt(ctx: RealizeContext, n: relax.Expr, bound: float) -> relax.Expr:
    """floor(sqrt(n)) for int64 1 <= n <= bound."""
    start = 2 ** math.ceil(math.log2(math.sqrt(bound) + 1))
    shape = shape_of(n)
    size = int(np.prod(shape))
    func = ctx.em.bb.add_func(_isqrt_func(start, math.ceil(math.log2(start)) + 6, size), "tvmq_isqrt")
    flat = ctx.em.emit(R.reshape(n, (size,)))
    root = ctx.em.emit(relax.call_tir(func, [flat], relax.TensorType((size,), "int64")))
    return ctx.em.emit(R.reshape(root, shape))


def _layer_norm(ctx: RealizeContext, node: Node) -> QTensor:
    x, gamma, beta = node.call.args[:3]
    attrs = node.call.attrs
    q = ctx.as_input(x)
    shape = shape_of(node.var)
    ndim, axes = len(shape), _norm_axes(node)
    count = int(np.prod([shape[a] for a in axes]))
    s = float(q.scale)
    em = ctx.em
    xi = em.emit(R.astype(q.expr, "int32"))
    total = em.emit(R.sum(xi, axis=axes, keepdims=True))
    squares = em.emit(R.astype(R.sum(R.multiply(xi, xi), axis=axes, keepdims=True), "int64"))
    eps = round(count * count * float(attrs.epsilon) / (s * s))
    wide = R.astype(total, "int64")
    spread = R.subtract(R.multiply(squares, em.const(count, "int64")), R.multiply(wide, wide))
    spread = R.maximum(R.add(spread, em.const(eps, "int64")), em.const(1, "int64"))
    # the root of a small spread (a row of nearly equal values) has few digits: scale the spread
    # by 4^m first, as far as int64 allows, and take 2^m * sqrt
    bound = (count * qmax(8)) ** 2 + eps
    m = max(0, min(16, (_INT64_BITS - math.ceil(math.log2(bound + 1))) // 2))
    spread = em.emit(R.left_shift(spread, em.const(2 * m, "int64")))
    root = _isqrt(ctx, spread, bound * 4**m)
    centred = R.astype(R.subtract(R.multiply(xi, em.const(count, "int32")), total), "int64")
    doubled = R.add(R.left_shift(centred, em.const(_NORM_BITS + m + 1, "int64")), root)
    norm = em.emit(R.astype(R.floor_divide(doubled, R.left_shift(root, em.const(1, "int64"))), "int32"))
    out = QTensor(norm, "int32", np.asarray(2.0**-_NORM_BITS))
    if bool(attrs.scale):
        g = ctx.as_weight(gamma, axis=0 if len(axes) == 1 else None)
        scale = channel_scale(g.scale, ndim, ndim - 1) * 2.0**-_NORM_BITS
        out = QTensor(em.emit(R.multiply(norm, R.astype(g.expr, "int32"))), "int32", scale)
    if bool(attrs.center):
        b = constant_at(em, const_value(beta), out.scale, ndim)
        out = out.with_expr(em.emit(R.add(out.expr, b.expr)))
    ctx.tables[node] = TableInfo(
        function="layer_norm",
        form="integer layer norm: int32/int64 sums, integer square root (Newton), integer division",
        input_scale=s,
        output_scale=float(np.max(out.scale)),
    )
    return out


register(OpRule("nn.softmax", "follow", _softmax, accepts=_softmax_accepts))
register(
    OpRule(
        "nn.layer_norm",
        "compute",  # a pre-norm transformer starts with one on its (float) input
        _layer_norm,
        accepts=_layer_norm_accepts,
        weights=lambda node: (
            {1: 0 if len(node.call.attrs.axes) == 1 else None} if bool(node.call.attrs.scale) else {}
        ),
    )
)
