"""Int8 conv2d and matmul kernels on an ISA's dot-product intrinsics, with weights packed at compile time.

Both ops are computed as an implicit GEMM: activations are re-laid so that the reduction values of
one output pixel are contiguous (NHWC with channels innermost, in groups of `k_lanes`), weights are
packed into [out_block][...][k_group][lanes][k_lanes] so one vector load feeds one intrinsic call,
and a tile of `lanes`-wide int32 accumulators is kept in registers. The layout and the loop nest
are the same for every ISA (worker/kernels/isa.py); only lanes, k_lanes, the operand dtypes, the
register budget and the tensorized intrinsic differ. For uint8 operands the activations are
shifted by +128 and the shift is undone by a per-channel constant (128 * sum of the channel's
weights); padding is applied before the shift so the constant is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te

from worker.kernels.isa import ISA, DotProduct


@dataclass
class Kernel:
    """A scheduled PrimFunc plus the constant arguments that follow the activation argument."""

    func: tvm.tirx.PrimFunc
    constants: list[np.ndarray]
    isa: ISA
    dot: DotProduct


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pack(weight_ock: np.ndarray, lanes: int, dot: DotProduct) -> tuple[np.ndarray, np.ndarray]:
    """(O, ..., K) int8 weights -> (OB, ..., KG, lanes, k_lanes) in the dot's dtype, plus the correction."""
    o, k = weight_ock.shape[0], weight_ock.shape[-1]
    ob, kg = _ceil_div(o, lanes), _ceil_div(k, dot.k_lanes)
    padded = np.zeros((ob * lanes, *weight_ock.shape[1:-1], kg * dot.k_lanes), np.int32)
    padded[:o, ..., :k] = weight_ock
    mid = weight_ock.shape[1:-1]
    blocks = padded.reshape(ob, lanes, *mid, kg, dot.k_lanes)
    order = (0, *range(2, 2 + len(mid)), 2 + len(mid), 1, 3 + len(mid))
    packed = np.ascontiguousarray(blocks.transpose(order)).astype(dot.weight_dtype)
    correction = (dot.shift * weight_ock.reshape(o, -1).astype(np.int64).sum(axis=1)).astype(np.int32)
    return packed, correction


def pack_weights(weight_ock: np.ndarray, isa: ISA) -> tuple[np.ndarray, np.ndarray, DotProduct]:
    """Pack for the ISA's fastest dot product that is exact on these weights."""
    for dot in isa.dots:
        packed, correction = _pack(weight_ock, isa.lanes, dot)
        if dot.exact_for(packed):
            return packed, correction, dot
    raise ValueError(f"ISA {isa.name} has no dot product exact for every int8 weight")


def _to_operand(value: te.Tensor, dot: DotProduct) -> tvm.tirx.Expr:
    if dot.shift:
        return (value.astype("int32") + dot.shift).astype(dot.data_dtype)
    return value.astype(dot.data_dtype)


def _register_tile(pixels: int, out_blocks: int, accumulators: int) -> tuple[int, int]:
    """Largest (out_block_tile, pixel_tile) dividing the extents with at most `accumulators` tiles."""
    best = (1, 1)
    for ob in (4, 3, 2, 1):
        if out_blocks % ob:
            continue
        for px in range(min(pixels, accumulators // ob), 0, -1):
            if pixels % px == 0:
                if ob * px > best[0] * best[1]:
                    best = (ob, px)
                break
    return best


def _schedule_dot(
    sch: tvm.s_tir.Schedule,
    intrinsic: str,
    parallel_outer: int,
    ob_index: int,
    pixel_index: int,
    tiles: tuple[int, int],
) -> None:
    """Register-tile the "dot" block, tensorize its 8 x k_lanes core and parallelize the outer loops.

    Loop layout on entry: spatial loops (..., lane), then reductions (..., k_lane). `ob_index` and
    `pixel_index` name the spatial loops that get register-tiled; the first `parallel_outer`
    spatial loops (after tiling) are fused into one parallel loop.
    """
    block = sch.get_sblock("dot")
    loops = sch.get_loops(block)
    n_red = len(sch.get(block).iter_vars) - len([iv for iv in sch.get(block).iter_vars if iv.iter_type == 0])
    spatial, reduce_ = loops[: len(loops) - n_red], loops[len(loops) - n_red :]
    lane, k_lane = spatial[-1], reduce_[-1]
    ob_o, ob_i = sch.split(spatial[ob_index], [None, tiles[0]])
    px_o, px_i = sch.split(spatial[pixel_index], [None, tiles[1]])
    outer = [
        lp
        for i, lp in enumerate(spatial[:-1])
        for lp in ((ob_o,) if i == ob_index else (px_o,) if i == pixel_index else (lp,))
    ]
    sch.reorder(*outer, *reduce_[:-1], ob_i, px_i, lane, k_lane)
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, outer[-1])
    sch.parallel(sch.fuse(*outer[:parallel_outer]))
    init = sch.decompose_reduction(block, reduce_[0])
    sch.tensorize(lane, intrinsic)
    sch.unroll(ob_i)
    sch.unroll(px_i)
    init_loops = sch.get_loops(init)
    sch.vectorize(init_loops[-1])
    acc_loops = sch.get_loops(acc)
    sch.vectorize(acc_loops[-1])


def _schedule_prepare(sch: tvm.s_tir.Schedule, parallel_outer: int) -> None:
    block = sch.get_sblock("prepare")
    loops = sch.get_loops(block)
    sch.parallel(sch.fuse(*loops[:parallel_outer]))


def _finish(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    return func.with_attr("tvmq_scheduled", True)


def conv2d_nchw(
    data_shape: tuple[int, int, int, int],
    weight_oihw: np.ndarray,
    strides: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
    isa: ISA,
) -> Kernel:
    """int8 NCHW x OIHW -> int32 NCHW conv2d (groups=1)."""
    n, c, h, w = data_shape
    o, _, kh, kw = weight_oihw.shape
    pt, pl, pb, pr = padding
    sh, sw = strides
    dh, dw = dilation
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    packed, correction, dot_product = pack_weights(weight_oihw.transpose(0, 2, 3, 1), isa)  # O, KH, KW, C
    ob, kg = packed.shape[0], packed.shape[3]
    cp = kg * dot_product.k_lanes

    data = te.placeholder((n, c, h, w), "int8", name="data")
    wpk = te.placeholder(packed.shape, dot_product.weight_dtype, name="weight_packed")
    corr = te.placeholder((o,), "int32", name="correction")

    def prepare(b, y, x, ch):
        inside = tvm.tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl, ch < c)
        value = tvm.tirx.if_then_else(inside, data[b, ch, y - pt, x - pl], tvm.tirx.const(0, "int8"))
        return _to_operand(value, dot_product)

    prep = te.compute((n, h + pt + pb, w + pl + pr, cp), prepare, name="prepare")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    rg, rl = te.reduce_axis((0, kg), "rg"), te.reduce_axis((0, dot_product.k_lanes), "rl")
    dot = te.compute(
        (n, ob, oh, ow, isa.lanes),
        lambda b, q, y, x, lane: te.sum(
            prep[b, y * sh + ry * dh, x * sw + rx * dw, rg * dot_product.k_lanes + rl].astype("int32")
            * wpk[q, ry, rx, rg, lane, rl].astype("int32"),
            axis=[ry, rx, rg, rl],
        ),
        name="dot",
    )
    out = te.compute(
        (n, o, oh, ow),
        lambda b, ch, y, x: dot[b, ch // isa.lanes, y, x, ch % isa.lanes] - corr[ch],
        name="out",
    )
    sch = tvm.s_tir.Schedule(te.create_prim_func([data, wpk, corr, out]))
    _schedule_prepare(sch, 2)
    tiles = _register_tile(ow, ob, isa.accumulators)
    _schedule_dot(sch, isa.intrinsic(dot_product), 3, ob_index=1, pixel_index=3, tiles=tiles)
    out_loops = sch.get_loops(sch.get_sblock("out"))
    sch.parallel(sch.fuse(*out_loops[:2]))
    return Kernel(_finish(sch.mod["main"]), [packed, correction], isa, dot_product)


def matmul(a_shape: tuple[int, int], weight_kn: np.ndarray, isa: ISA) -> Kernel:
    """int8 (M, K) x constant int8 (K, N) -> int32 (M, N)."""
    m, k = a_shape
    _, nn = weight_kn.shape
    packed, correction, dot_product = pack_weights(np.ascontiguousarray(weight_kn.T), isa)  # N, K
    nb, kg = packed.shape[0], packed.shape[1]
    kp = kg * dot_product.k_lanes

    a = te.placeholder((m, k), "int8", name="a")
    wpk = te.placeholder(packed.shape, dot_product.weight_dtype, name="weight_packed")
    corr = te.placeholder((nn,), "int32", name="correction")
    prep = te.compute(
        (m, kp),
        lambda i, j: _to_operand(
            tvm.tirx.if_then_else(j < k, a[i, j], tvm.tirx.const(0, "int8")), dot_product
        ),
        name="prepare",
    )
    rg, rl = te.reduce_axis((0, kg), "rg"), te.reduce_axis((0, dot_product.k_lanes), "rl")
    dot = te.compute(
        (m, nb, isa.lanes),
        lambda i, q, lane: te.sum(
            prep[i, rg * dot_product.k_lanes + rl].astype("int32") * wpk[q, rg, lane, rl].astype("int32"),
            axis=[rg, rl],
        ),
        name="dot",
    )
    out = te.compute((m, nn), lambda i, j: dot[i, j // isa.lanes, j % isa.lanes] - corr[j], name="out")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, wpk, corr, out]))
    _schedule_prepare(sch, 1)
    ob_tile, m_tile = _register_tile(m, nb, isa.accumulators)
    _schedule_dot(sch, isa.intrinsic(dot_product), 2, ob_index=1, pixel_index=0, tiles=(ob_tile, m_tile))
    out_loops = sch.get_loops(sch.get_sblock("out"))
    sch.parallel(out_loops[0])
    return Kernel(_finish(sch.mod["main"]), [packed, correction], isa, dot_product)
