"""Packed conv2d and matmul kernels: int8 on an ISA's dot-product intrinsics, float32 on FMA, with
weights packed at compile time.

Both ops are computed as an implicit GEMM: activations are re-laid so that the reduction values of
one output pixel are contiguous (NHWC with channels innermost, in groups of `k_lanes`), weights are
packed into [out_block][...][k_group][lanes][k_lanes] so one vector load feeds one intrinsic call,
and a tile of `lanes`-wide accumulators is kept in registers. The layout and the loop nest are the
same for every ISA (worker/kernels/isa.py) and for float32 (k_lanes = 1, `vfmadd`); only lanes,
k_lanes, the operand dtypes, the register budget and the tensorized intrinsic differ. For uint8
operands the activations are shifted by +128 and the shift is undone by a per-channel constant
(128 * sum of the channel's weights); padding is applied before the shift so the constant is exact.

The kernels are built unscheduled and fusable (kOutEWiseFusable): FuseOps puts the elementwise ops
that follow (bias, requantize, residual add, activation) into the kernel's function, and
`schedule_fused` then schedules the whole function, computing that epilogue inside each register
tile. Block annotations carry the kernel's schedule parameters through fusion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te
from tvm.sym import detect_linear_equation

from worker.kernels.isa import FMA32, ISA, DotProduct

#: FuseOps may fuse the elementwise consumers (bias, requantize, relu) into a kernel.
OUT_ELEMWISE_FUSABLE = 4
#: PrimFunc attribute: already scheduled (the generic rules leave it alone).
SCHEDULED = "tvmq_scheduled"


@dataclass
class Kernel:
    """An unscheduled PrimFunc (scheduled after fusion by `schedule_fused`) plus the constant
    arguments that follow the activation argument."""

    func: tvm.tirx.PrimFunc
    constants: list[np.ndarray]
    isa: ISA
    dot: DotProduct

    def scheduled(self) -> tvm.tirx.PrimFunc:
        """The kernel alone, scheduled as it is inside a fused function."""
        return schedule_fused(self.func)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pack(weight_ock: np.ndarray, lanes: int, dot: DotProduct) -> tuple[np.ndarray, np.ndarray]:
    """(O, ..., K) int8 weights -> (OB, ..., KG, lanes, k_lanes) in the dot's dtype, plus the correction."""
    o, k = weight_ock.shape[0], weight_ock.shape[-1]
    ob, kg = _ceil_div(o, lanes), _ceil_div(k, dot.k_lanes)
    padded = np.zeros(
        (ob * lanes, *weight_ock.shape[1:-1], kg * dot.k_lanes), np.result_type(weight_ock, np.int32)
    )
    padded[:o, ..., :k] = weight_ock
    mid = weight_ock.shape[1:-1]
    blocks = padded.reshape(ob, lanes, *mid, kg, dot.k_lanes)
    order = (0, *range(2, 2 + len(mid)), 2 + len(mid), 1, 3 + len(mid))
    packed = np.ascontiguousarray(blocks.transpose(order)).astype(dot.weight_dtype)
    correction = (dot.shift * weight_ock.reshape(o, -1).astype(np.int64).sum(axis=1)).astype(np.int32)
    return packed, correction


def pack_weights(weight_ock: np.ndarray, isa: ISA) -> tuple[np.ndarray, np.ndarray, DotProduct]:
    """Pack for the ISA's fastest dot product that is exact on these weights (FMA for float32)."""
    for dot in isa.dots if weight_ock.dtype == np.int8 else (FMA32,):
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


#: Block annotations the kernels carry through FuseOps/FuseTIR to `schedule_fused`.
PACKED = "tvmq_packed"  # on the dot block: the tensor intrinsic
TILES = "tvmq_tiles"  # (out-block tile, pixel tile) of the register tile
LOOPS = "tvmq_loops"  # (parallel outer loops, out-block loop index, pixel loop index, k_lanes)
PREPARE = "tvmq_prepare"  # on the block that re-lays the activations


def schedule_fused(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc | None:
    """Schedule a PrimFunc holding one packed kernel and the elementwise ops FuseOps put around it.

    Elementwise producers are inlined into the activation re-layout, the kernel's own NCHW
    write-back and the epilogue (bias, requantize, residual add, relu, casts) into one final
    block, which is then computed inside the register tile: the accumulators are read once, in
    registers, and only the epilogue's result reaches memory. None when `func` has no packed kernel.
    """
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    dot = next((b for b in blocks if PACKED in sch.get(b).annotations), None)
    if dot is None:
        return None
    for name in [sch.get(b).name_hint for b in blocks]:
        block = sch.get_sblock(name)
        if PACKED in sch.get(block).annotations or PREPARE in sch.get(block).annotations:
            continue
        try:
            sch.compute_inline(block)
        except tvm.s_tir.ScheduleError:
            continue  # the output block, or one the inliner refuses: computed as it is
    dot = sch.get_sblock(sch.get(dot).name_hint)
    annotations = sch.get(dot).annotations
    parallel_outer, ob_index, pixel_index, k_lanes = (int(v) for v in annotations[LOOPS])
    tiles = tuple(int(v) for v in annotations[TILES])
    for block in sch.get_producers(dot):
        if PREPARE in sch.get(block).annotations:
            _schedule_prepare(sch, block, parallel_outer - 1)
    _schedule_dot(sch, dot, str(annotations[PACKED]), (parallel_outer, ob_index, pixel_index, k_lanes), tiles)
    return sch.mod["main"].with_attr(SCHEDULED, True)


def _schedule_dot(
    sch: tvm.s_tir.Schedule,
    block: tvm.s_tir.schedule.SBlockRV,
    intrinsic: str,
    layout: tuple[int, int, int, int],
    tiles: tuple[int, int],
) -> None:
    """Register-tile the dot block, tensorize its lanes x k_lanes core, parallelize the outer loops
    and compute its consumer (the write-back with any fused epilogue) inside each tile.

    Loop layout on entry: spatial loops (..., lane), then reductions (..., k_lane when k_lanes > 1).
    `layout` = (parallel_outer, ob_index, pixel_index, k_lanes): `ob_index` and `pixel_index` name
    the spatial loops that get register-tiled; the first `parallel_outer` spatial loops (after
    tiling) are fused into one parallel loop.
    """
    parallel_outer, ob_index, pixel_index, k_lanes = layout
    (final,) = sch.get_consumers(block)
    loops = sch.get_loops(block)
    n_red = len([iv for iv in sch.get(block).iter_vars if iv.iter_type != 0])
    spatial, reduce_ = loops[: len(loops) - n_red], loops[len(loops) - n_red :]
    lane = spatial[-1]
    k_lane = reduce_[-1:] if k_lanes > 1 else []
    reduce_ = reduce_[: len(reduce_) - len(k_lane)]
    ob_o, ob_i = sch.split(spatial[ob_index], [None, tiles[0]])
    px_o, px_i = sch.split(spatial[pixel_index], [None, tiles[1]])
    outer = [
        lp
        for i, lp in enumerate(spatial[:-1])
        for lp in ((ob_o,) if i == ob_index else (px_o,) if i == pixel_index else (lp,))
    ]
    sch.reorder(*outer, *reduce_, ob_i, px_i, lane, *k_lane)
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, outer[-1])
    sch.compute_inline(acc)
    in_tile = _computes_everything_in_tile(sch, final, outer[-1])
    if in_tile:
        sch.reverse_compute_at(final, outer[-1])
    sch.parallel(sch.fuse(*outer[:parallel_outer]))
    init = sch.decompose_reduction(block, reduce_[0])
    sch.tensorize(lane, intrinsic)
    sch.unroll(ob_i)
    sch.unroll(px_i)
    sch.vectorize(sch.get_loops(init)[-1])
    if in_tile:
        _vectorize_write_back(sch, final, len(outer) - parallel_outer + 1, tiles[1])
    else:
        _parallel_outside(sch, final)


def _computes_everything_in_tile(
    sch: tvm.s_tir.Schedule, final: tvm.s_tir.schedule.SBlockRV, tile_loop: tvm.s_tir.schedule.LoopRV
) -> bool:
    """Whether the epilogue, computed inside the register tile, still writes every element of its
    output. reverse_compute_at keeps only the instances that read the tile, so an epilogue with
    elements that read no accumulator (the border of a pad FuseOps fused in, another input's part of
    a concatenation) would leave them unwritten: garbage from the VM's memory pool, different from
    call to call. Tried on a copy; the instances computed over all tiles must equal the domain."""
    trial = sch.copy()
    trial.reverse_compute_at(final, tile_loop)
    realize = trial.get(trial.get_loops(final)[-1]).body
    extents = [trial.get(lp).extent for lp in trial.get_loops(final)]
    domain = [iv.dom.extent for iv in trial.get(final).iter_vars]
    if not isinstance(realize, tvm.s_tir.SBlockRealize) or not all(
        isinstance(e, tvm.tirx.IntImm) for e in (*extents, *domain)
    ):
        return False
    unconditional = isinstance(realize.predicate, tvm.tirx.IntImm) and bool(realize.predicate.value)
    return unconditional and math.prod(int(e) for e in extents) == math.prod(int(e) for e in domain)


def _parallel_outside(sch: tvm.s_tir.Schedule, final: tvm.s_tir.schedule.SBlockRV) -> None:
    """The epilogue as its own pass over memory after the kernel, parallel over its outer loops."""
    loops = sch.get_loops(final)
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:-1]))


def _vectorize_write_back(
    sch: tvm.s_tir.Schedule, final: tvm.s_tir.schedule.SBlockRV, outer: int, tile_pixels: int
) -> None:
    """Inside the tile: output channels innermost and vectorized (the accumulator's lanes), the
    tile's pixel loops unrolled (at most `tile_pixels` copies).

    An epilogue that broadcasts the kernel's result over more pixels than the tile holds (a
    squeeze-excite gate multiplying a whole feature map) walks that map instead: channels
    outermost, the map's contiguous row vectorized, nothing unrolled. Vectorized over channels it
    gathers across NCHW planes, and unrolled over the map LLVM takes minutes to compile it."""
    loops = sch.get_loops(final)[outer:]
    realize = sch.get(loops[-1]).body if loops else None
    if not isinstance(realize, tvm.s_tir.SBlockRealize):
        return
    binding = realize.iter_values[1]
    channel = next((lp for lp in loops if _uses(binding, sch.get(lp).loop_var)), None)
    if channel is None:
        return
    others = [lp for lp in loops if not lp.same_as(channel)]
    extents = [sch.get(lp).extent for lp in others]
    if not all(isinstance(e, tvm.tirx.IntImm) for e in extents):
        return
    if others and math.prod(int(e) for e in extents) > tile_pixels:
        sch.reorder(channel, *others)
        sch.vectorize(others[-1])
        return
    sch.reorder(*others, channel)
    for lp in others:
        sch.unroll(lp)
    if isinstance(sch.get(channel).extent, tvm.tirx.IntImm):
        sch.vectorize(channel)


def _uses(expr: tvm.tirx.PrimExpr, var: tvm.tirx.Var) -> bool:
    """Whether `expr` moves with `var` (the wheel has no TIR expression visitor in Python)."""
    steps = detect_linear_equation(expr, [var])
    return not steps or not (isinstance(steps[0], tvm.tirx.IntImm) and steps[0].value == 0)


def _schedule_prepare(
    sch: tvm.s_tir.Schedule, block: tvm.s_tir.schedule.SBlockRV, parallel_outer: int
) -> None:
    loops = sch.get_loops(block)
    sch.parallel(sch.fuse(*loops[:parallel_outer]))


def _k_axes(kg: int, dot: DotProduct) -> tuple[tvm.tirx.IterVar, tvm.tirx.Expr, list]:
    """The reduction over k groups and, for more than one value per lane, within a group (a unit
    loop would not match the one-product intrinsic)."""
    rg = te.reduce_axis((0, kg), "rg")
    if dot.k_lanes == 1:
        return rg, tvm.tirx.const(0, "int64"), [rg]
    rl = te.reduce_axis((0, dot.k_lanes), "rl")
    return rg, rl, [rg, rl]


def _annotations(
    intrinsic: str, tiles: tuple[int, int], loops: tuple[int, int, int], dot: DotProduct
) -> dict:
    return {PACKED: intrinsic, TILES: list(tiles), LOOPS: [*loops, dot.k_lanes]}


def _kernel(tensors: list[te.Tensor], constants: list[np.ndarray], isa: ISA, dot: DotProduct) -> Kernel:
    func = te.create_prim_func(tensors, index_dtype_override="int64")  # as LegalizeOps emits
    return Kernel(func.with_attr("op_pattern", OUT_ELEMWISE_FUSABLE), constants, isa, dot)


def conv2d_nchw(
    data_shape: tuple[int, int, int, int],
    weight_oihw: np.ndarray,
    strides: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
    isa: ISA,
) -> Kernel:
    """NCHW x OIHW -> NCHW conv2d (groups=1): int8 -> int32 on the ISA's dot products, float32 on FMA."""
    n, _, h, w = data_shape
    o, _, kh, kw = weight_oihw.shape
    pt, pl, pb, pr = padding
    sh, sw = strides
    dh, dw = dilation
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    packed, correction, dot_product = pack_weights(weight_oihw.transpose(0, 2, 3, 1), isa)  # O, KH, KW, C
    ob, kg = packed.shape[0], packed.shape[3]
    data, wpk, prep = _nhwc_operands(data_shape, padding, packed, dot_product, str(weight_oihw.dtype))
    acc = dot_product.acc_dtype
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    rg, rl, k_axes = _k_axes(kg, dot_product)
    dot = te.compute(
        (n, ob, oh, ow, isa.lanes),
        lambda b, q, y, x, lane: te.sum(
            prep[b, y * sh + ry * dh, x * sw + rx * dw, rg * dot_product.k_lanes + rl].astype(acc)
            * wpk[q, ry, rx, rg, lane, rl].astype(acc),
            axis=[ry, rx, *k_axes],
        ),
        name="dot",
        attrs=_annotations(
            isa.intrinsic(dot_product), _register_tile(ow, ob, isa.accumulators), (3, 1, 3), dot_product
        ),
    )
    return _write_back(
        [data, wpk],
        dot,
        (n, o, oh, ow),
        _nchw_accumulator(isa),
        lambda b, ch, y, x: (ch,),
        packed,
        correction,
        isa,
        dot_product,
    )


def conv2d_transpose_nchw(data_shape: tuple[int, int, int, int], weight_iohw: np.ndarray, isa: ISA) -> Kernel:
    """NCHW x IOHW -> NCHW conv2d_transpose whose stride equals its kernel (groups=1, no padding):
    the upsampling of segmentation and detection heads. Its windows do not overlap, so output pixel
    (y, x) is input pixel (y // s, x // s) times the weights of offset (y % s, x % s): the loop nest
    and register tile of a 1x1 conv over the output pixels, so the epilogue is computed in the tile
    as for a conv. TVM's lowering instead reduces over the zero-dilated input (3/4 zeros at s = 2)."""
    n, _, h, w = data_shape
    _, o, sh, sw = weight_iohw.shape
    packed, _, dot_product = pack_weights(weight_iohw.transpose(1, 2, 3, 0), isa)  # O, a, b, C
    # each output pixel reads the weights of one offset: the uint8 shift's correction is per (o, a, b)
    correction = (dot_product.shift * weight_iohw.astype(np.int64).sum(axis=0)).astype(np.int32)
    ob, kg = packed.shape[0], packed.shape[3]
    data, wpk, prep = _nhwc_operands(data_shape, (0, 0, 0, 0), packed, dot_product, str(weight_iohw.dtype))
    acc = dot_product.acc_dtype
    rg, rl, k_axes = _k_axes(kg, dot_product)
    dot = te.compute(
        (n, ob, h * sh, w * sw, isa.lanes),
        lambda b, q, y, x, lane: te.sum(
            prep[b, y // sh, x // sw, rg * dot_product.k_lanes + rl].astype(acc)
            * wpk[q, y % sh, x % sw, rg, lane, rl].astype(acc),
            axis=k_axes,
        ),
        name="dot",
        attrs=_annotations(
            isa.intrinsic(dot_product), _register_tile(w * sw, ob, isa.accumulators), (3, 1, 3), dot_product
        ),
    )
    return _write_back(
        [data, wpk],
        dot,
        (n, o, h * sh, w * sw),
        _nchw_accumulator(isa),
        lambda b, ch, y, x: (ch, y % sh, x % sw),
        packed,
        correction,
        isa,
        dot_product,
    )


def _nchw_accumulator(isa: ISA) -> Callable[..., tuple]:
    """NCHW output index -> index of the [n, out block, y, x, lane] accumulators."""
    return lambda b, ch, y, x: (b, ch // isa.lanes, y, x, ch % isa.lanes)


def _nhwc_operands(
    data_shape: tuple[int, int, int, int],
    padding: tuple[int, int, int, int],
    packed: np.ndarray,
    dot_product: DotProduct,
    in_dtype: str,
) -> tuple[te.Tensor, te.Tensor, te.Tensor]:
    """The NCHW data and packed weight placeholders, and the data re-laid as padded NHWC operands
    with the channels padded to whole k groups."""
    n, c, h, w = data_shape
    pt, pl, pb, pr = padding
    cp = packed.shape[-3] * dot_product.k_lanes
    data = te.placeholder((n, c, h, w), in_dtype, name="data")
    wpk = te.placeholder(packed.shape, dot_product.weight_dtype, name="weight_packed")

    def prepare(b, y, x, ch):
        inside = tvm.tirx.all(y >= pt, y < h + pt, x >= pl, x < w + pl, ch < c)
        value = tvm.tirx.if_then_else(inside, data[b, ch, y - pt, x - pl], tvm.tirx.const(0, in_dtype))
        return _to_operand(value, dot_product)

    prep = te.compute((n, h + pt + pb, w + pl + pr, cp), prepare, name="prepare", attrs={PREPARE: 1})
    return data, wpk, prep


def matmul(a_shape: tuple[int, int], weight_kn: np.ndarray, isa: ISA) -> Kernel:
    """(M, K) x constant (K, N): int8 -> int32 on the ISA's dot products, float32 on FMA."""
    m, k = a_shape
    _, nn = weight_kn.shape
    packed, correction, dot_product = pack_weights(np.ascontiguousarray(weight_kn.T), isa)  # N, K
    nb, kg = packed.shape[0], packed.shape[1]
    kp = kg * dot_product.k_lanes
    in_dtype, acc = str(weight_kn.dtype), dot_product.acc_dtype

    a = te.placeholder((m, k), in_dtype, name="a")
    wpk = te.placeholder(packed.shape, dot_product.weight_dtype, name="weight_packed")
    prep = te.compute(
        (m, kp),
        lambda i, j: _to_operand(
            tvm.tirx.if_then_else(j < k, a[i, j], tvm.tirx.const(0, in_dtype)), dot_product
        ),
        name="prepare",
        attrs={PREPARE: 1},
    )
    rg, rl, k_axes = _k_axes(kg, dot_product)
    dot = te.compute(
        (nb, m, isa.lanes),  # out blocks outermost: each block's weights are reused by every row tile
        lambda q, i, lane: te.sum(
            prep[i, rg * dot_product.k_lanes + rl].astype(acc) * wpk[q, rg, lane, rl].astype(acc),
            axis=k_axes,
        ),
        name="dot",
        attrs=_annotations(
            isa.intrinsic(dot_product), _register_tile(m, nb, isa.accumulators), (2, 0, 1), dot_product
        ),
    )
    return _write_back(
        [a, wpk],
        dot,
        (m, nn),
        lambda i, j: (j // isa.lanes, i, j % isa.lanes),
        lambda i, j: (j,),
        packed,
        correction,
        isa,
        dot_product,
    )


def _write_back(
    inputs: list[te.Tensor],
    dot: te.Tensor,
    shape: tuple[int, ...],
    index: Callable[..., tuple],
    corrected: Callable[..., tuple],
    packed: np.ndarray,
    correction: np.ndarray,
    isa: ISA,
    dot_product: DotProduct,
) -> Kernel:
    """The output in the op's own layout (`index`: output index -> accumulator index), minus the
    uint8 shift's correction where there is one (`corrected`: output index -> correction index)."""
    if not dot_product.shift:
        out = te.compute(shape, lambda *i: dot[index(*i)], name="out")
        return _kernel([*inputs, out], [packed], isa, dot_product)
    corr = te.placeholder(correction.shape, "int32", name="correction")
    out = te.compute(shape, lambda *i: dot[index(*i)] - corr[corrected(*i)], name="out")
    return _kernel([*inputs, corr, out], [packed, correction], isa, dot_product)
