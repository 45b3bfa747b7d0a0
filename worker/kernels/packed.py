"""Int8 conv2d and matmul kernels on the AVX2 dot-product intrinsics, with weights packed at compile time.

Both ops are computed as an implicit GEMM: activations are re-laid so that the reduction values of
one output pixel are contiguous (NHWC with channels innermost, in groups of `k_lanes`), weights are
packed into [out_block][...][k_group][8 out lanes][k_lanes] so one 32-byte load feeds one
intrinsic call, and an 8-lane int32 accumulator tile is kept in registers. In the u8s8 mode the
activations are shifted by +128 to uint8 and the shift is undone by a per-channel constant
(128 * sum of the channel's weights); padding is applied before the shift so the constant is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te

from worker.kernels import intrin

SHIFT = 128
MAX_ACCUMULATORS = 12  # 16 ymm registers minus weights, the broadcast and a temporary


@dataclass(frozen=True)
class Mode:
    """How int8 operands meet the hardware: one intrinsic and the dtypes it consumes."""

    name: str
    k_lanes: int
    data_dtype: str
    weight_dtype: str
    intrinsic: str


U8S8 = Mode("u8s8", intrin.U8S8_K, "uint8", "int8", intrin.U8S8_INTRIN)
S16 = Mode("s16", intrin.S16_K, "int16", "int16", intrin.S16_INTRIN)


@dataclass
class Kernel:
    """A scheduled PrimFunc plus the constant arguments that follow the activation argument."""

    func: tvm.tirx.PrimFunc
    constants: list[np.ndarray]
    mode: Mode


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _choose_mode(packed_u8: np.ndarray) -> Mode:
    """u8s8 only when no saturating pair exists: |w0| + |w1| <= 128 for every vpmaddubsw pair."""
    pairs = np.abs(packed_u8.astype(np.int32)).reshape(-1, 2).sum(axis=1)
    return U8S8 if int(pairs.max(initial=0)) <= intrin.WEIGHT_PAIR_LIMIT else S16


def _pack(weight_ock: np.ndarray, mode: Mode) -> tuple[np.ndarray, np.ndarray]:
    """(O, ..., K) int8 weights -> (OB, ..., KG, 8, k_lanes) in the mode's dtype, plus the correction."""
    o, k = weight_ock.shape[0], weight_ock.shape[-1]
    ob, kg = _ceil_div(o, intrin.LANES), _ceil_div(k, mode.k_lanes)
    padded = np.zeros((ob * intrin.LANES, *weight_ock.shape[1:-1], kg * mode.k_lanes), np.int32)
    padded[:o, ..., :k] = weight_ock
    mid = weight_ock.shape[1:-1]
    blocks = padded.reshape(ob, intrin.LANES, *mid, kg, mode.k_lanes)
    order = (0, *range(2, 2 + len(mid)), 2 + len(mid), 1, 3 + len(mid))
    packed = np.ascontiguousarray(blocks.transpose(order)).astype(mode.weight_dtype)
    shift = SHIFT if mode is U8S8 else 0
    correction = (shift * weight_ock.reshape(o, -1).astype(np.int64).sum(axis=1)).astype(np.int32)
    return packed, correction


def pack_weights(weight_ock: np.ndarray) -> tuple[np.ndarray, np.ndarray, Mode]:
    """Pack for u8s8 when exact, else for the int16 path."""
    packed, correction = _pack(weight_ock, U8S8)
    mode = _choose_mode(packed)
    if mode is S16:
        packed, correction = _pack(weight_ock, S16)
    return packed, correction, mode


def _to_mode(value: te.Tensor, mode: Mode) -> tvm.tirx.PrimExpr:
    if mode is U8S8:
        return (value.astype("int32") + SHIFT).astype("uint8")
    return value.astype("int16")


def _register_tile(pixels: int, out_blocks: int) -> tuple[int, int]:
    """Largest (out_block_tile, pixel_tile) dividing the extents with at most MAX_ACCUMULATORS tiles."""
    best = (1, 1)
    for ob in (4, 3, 2, 1):
        if out_blocks % ob:
            continue
        for px in range(min(pixels, MAX_ACCUMULATORS // ob), 0, -1):
            if pixels % px == 0:
                if ob * px > best[0] * best[1]:
                    best = (ob, px)
                break
    return best


def _schedule_dot(
    sch: tvm.s_tir.Schedule,
    mode: Mode,
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
    sch.tensorize(lane, mode.intrinsic)
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
) -> Kernel:
    """int8 NCHW x OIHW -> int32 NCHW conv2d (groups=1)."""
    n, c, h, w = data_shape
    o, _, kh, kw = weight_oihw.shape
    pt, pl, pb, pr = padding
    sh, sw = strides
    dh, dw = dilation
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    packed, correction, mode = pack_weights(weight_oihw.transpose(0, 2, 3, 1))  # O, KH, KW, C
    ob, kg = packed.shape[0], packed.shape[3]
    cp = kg * mode.k_lanes

    data = te.placeholder((n, c, h, w), "int8", name="data")
    wpk = te.placeholder(packed.shape, mode.weight_dtype, name="weight_packed")
    corr = te.placeholder((o,), "int32", name="correction")

    def prepare(b, y, x, ch):
        inside = tvm.tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl, ch < c)
        value = tvm.tirx.if_then_else(inside, data[b, ch, y - pt, x - pl], tvm.tirx.const(0, "int8"))
        return _to_mode(value, mode)

    prep = te.compute((n, h + pt + pb, w + pl + pr, cp), prepare, name="prepare")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    rg, rl = te.reduce_axis((0, kg), "rg"), te.reduce_axis((0, mode.k_lanes), "rl")
    dot = te.compute(
        (n, ob, oh, ow, intrin.LANES),
        lambda b, q, y, x, lane: te.sum(
            prep[b, y * sh + ry * dh, x * sw + rx * dw, rg * mode.k_lanes + rl].astype("int32")
            * wpk[q, ry, rx, rg, lane, rl].astype("int32"),
            axis=[ry, rx, rg, rl],
        ),
        name="dot",
    )
    out = te.compute(
        (n, o, oh, ow),
        lambda b, ch, y, x: dot[b, ch // intrin.LANES, y, x, ch % intrin.LANES] - corr[ch],
        name="out",
    )
    sch = tvm.s_tir.Schedule(te.create_prim_func([data, wpk, corr, out]))
    _schedule_prepare(sch, 2)
    _schedule_dot(sch, mode, 3, ob_index=1, pixel_index=3, tiles=_register_tile(ow, ob))
    out_loops = sch.get_loops(sch.get_sblock("out"))
    sch.parallel(sch.fuse(*out_loops[:2]))
    return Kernel(_finish(sch.mod["main"]), [packed, correction], mode)


def matmul(a_shape: tuple[int, int], weight_kn: np.ndarray) -> Kernel:
    """int8 (M, K) x constant int8 (K, N) -> int32 (M, N)."""
    m, k = a_shape
    _, nn = weight_kn.shape
    packed, correction, mode = pack_weights(np.ascontiguousarray(weight_kn.T))  # N, K
    nb, kg = packed.shape[0], packed.shape[1]
    kp = kg * mode.k_lanes

    a = te.placeholder((m, k), "int8", name="a")
    wpk = te.placeholder(packed.shape, mode.weight_dtype, name="weight_packed")
    corr = te.placeholder((nn,), "int32", name="correction")
    prep = te.compute(
        (m, kp),
        lambda i, j: _to_mode(tvm.tirx.if_then_else(j < k, a[i, j], tvm.tirx.const(0, "int8")), mode),
        name="prepare",
    )
    rg, rl = te.reduce_axis((0, kg), "rg"), te.reduce_axis((0, mode.k_lanes), "rl")
    dot = te.compute(
        (m, nb, intrin.LANES),
        lambda i, q, lane: te.sum(
            prep[i, rg * mode.k_lanes + rl].astype("int32") * wpk[q, rg, lane, rl].astype("int32"),
            axis=[rg, rl],
        ),
        name="dot",
    )
    out = te.compute((m, nn), lambda i, j: dot[i, j // intrin.LANES, j % intrin.LANES] - corr[j], name="out")
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, wpk, corr, out]))
    _schedule_prepare(sch, 1)
    ob_tile, m_tile = _register_tile(m, nb)
    _schedule_dot(sch, mode, 2, ob_index=1, pixel_index=0, tiles=(ob_tile, m_tile))
    out_loops = sch.get_loops(sch.get_sblock("out"))
    sch.parallel(out_loops[0])
    return Kernel(_finish(sch.mod["main"]), [packed, correction], mode)
