"""Generic CPU schedule rules applied to every fused PrimFunc after FuseTIR.

Rules match structure, not names: a root-level block whose iterators map one-to-one onto its own
loops is either *spatial* (elementwise, layout, padding: parallel outer loops + a vectorized inner
loop) or a *reduction* (conv2d in any layout or grouping, matmul, pooling, reductions: an
accumulator tile of (block axis x vector axis) kept in a small buffer, reductions inside, parallel
outer tiles). Any rule that the schedule primitives refuse leaves that block as TVM lowered it, so
the result is always as correct as the default build.

Before the rules, elementwise chains (bias, requantize, relu, casts) are inlined into their consumer
and then into the reduction's accumulator write-back, so a fused op makes one pass over memory and
its epilogue runs on the vector registers of the tile. Window reductions (depthwise conv, pooling:
one input plane per output plane) are tiled per plane instead: parallel over planes, the padded
plane built next to its use with a vectorized interior copy.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

from worker.kernels import depthwise, packed

VECTOR_FACTORS = (16, 8, 14, 7)  # 32-bit lanes: two or one AVX2 register per row; 14/7 for 28/14/7 maps
BLOCK_FACTORS = (4, 3, 2)
SPATIAL, REDUCE = 0, 2  # tirx.IterVar kinds
SCHEDULED_ATTR = packed.SCHEDULED


def _largest_divisor(extent: int, candidates: tuple[int, ...]) -> int:
    return next((c for c in candidates if extent % c == 0 and extent >= c), 1)


def _has_branch(block: tirx.Stmt) -> bool:
    """if_then_else bodies (padding) stay scalar: vectorized they would load out of bounds.

    The 0.27 wheel exposes no TIR expression visitor to Python, so the printed body is searched.
    """
    return "if_then_else" in str(block.body)


def _own_loops(sch: s_tir.Schedule, block: SBlockRV) -> list[LoopRV] | None:
    """The block's loops if each iterator is bound to exactly one of them, in order; else None."""
    loops = sch.get_loops(block)
    if not loops or len(loops) != len(sch.get(block).iter_vars):
        return None
    realize = sch.get(loops[-1]).body
    if not isinstance(realize, s_tir.SBlockRealize):
        return None
    loop_vars = [sch.get(lp).loop_var for lp in loops]
    if not all(v.same_as(lv) for v, lv in zip(realize.iter_values, loop_vars, strict=True)):
        return None
    return loops


def _iter_kinds(sch: s_tir.Schedule, block: SBlockRV) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def _extent(sch: s_tir.Schedule, loop: LoopRV) -> int:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else 0


def _parallel(sch: s_tir.Schedule, loops: list[LoopRV]) -> None:
    if loops and any(_extent(sch, lp) != 1 for lp in loops):
        sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])


def schedule_spatial(sch: s_tir.Schedule, block: SBlockRV, loops: list[LoopRV]) -> None:
    """Elementwise/injective: fused parallel outer loops, vector inner loop when it divides."""
    inner = loops[-1]
    factor = 0 if _has_branch(sch.get(block)) else _largest_divisor(_extent(sch, inner), (8,))
    if factor > 1:
        outer_inner, vec = sch.split(inner, [None, factor])
        _parallel(sch, [*loops[:-1], outer_inner])
        sch.vectorize(vec)
    else:
        _parallel(sch, loops[:-1] if len(loops) > 1 else loops)


def _block_axis(sch: s_tir.Schedule, spatial: list[LoopRV], window: bool) -> int | None:
    """The spatial loop tiled next to the vector axis: output rows for windows, else the longest."""
    if window:
        return len(spatial) - 2 if _extent(sch, spatial[-2]) > 1 else None
    candidates = [i for i, lp in enumerate(spatial[:-1]) if _extent(sch, lp) > 1]
    return max(candidates, key=lambda i: (_extent(sch, spatial[i]), i)) if candidates else None


def schedule_reduction(sch: s_tir.Schedule, block: SBlockRV, loops: list[LoopRV]) -> None:
    """Register tile (block axis x vector axis) around all reductions; parallel over tiles."""
    kinds = _iter_kinds(sch, block)
    spatial = [lp for lp, k in zip(loops, kinds, strict=True) if k == SPATIAL]
    reduce_ = [lp for lp, k in zip(loops, kinds, strict=True) if k == REDUCE]
    if len(spatial) + len(reduce_) != len(loops) or not spatial:
        raise ValueError("block with iterators other than spatial/reduce")
    window = len(spatial) >= 3 and depthwise.is_window(sch.get(block), [_extent(sch, lp) for lp in reduce_])
    pads = [p for p in sch.get_producers(block) if _has_branch(sch.get(p))] if window else []
    phases = depthwise.split_column_phases(sch, block) if window else None
    vector = not _has_branch(sch.get(block))
    b_index = _block_axis(sch, spatial, window)
    if window:
        rows = _extent(sch, spatial[b_index]) if b_index is not None else 1
        bits = tvm.runtime.DataType(str(sch.get(block).writes[0].source.dtype)).bits
        b_factor, v_factor = depthwise.tile(rows, _extent(sch, spatial[-1]), bits, vector)
    else:
        v_factor = _largest_divisor(_extent(sch, spatial[-1]), VECTOR_FACTORS) if vector else 1
        b_extent = _extent(sch, spatial[b_index]) if b_index is not None else 1
        b_factor = _largest_divisor(b_extent, BLOCK_FACTORS)

    outer, tile = list(spatial[:-1]), []
    if b_index is not None and b_factor > 1:
        b_o, b_i = sch.split(spatial[b_index], [None, b_factor])
        outer[b_index] = b_o
        tile.append(b_i)
    if v_factor > 1:
        v_o, v_i = sch.split(spatial[-1], [None, v_factor])
        outer.append(v_o)
        tile.append(v_i)
    else:
        outer.append(spatial[-1])
    sch.reorder(*outer, *reduce_, *tile)
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, outer[-1])
    _inline_consumers(sch, acc)
    planes = outer[:-2] if window else outer
    _parallel(sch, planes)
    for blk in (block, acc):  # before decompose_reduction: vectorize refuses an init-less update
        _finish_tile(sch, sch.get_loops(blk), v_factor, b_factor)
    init = sch.decompose_reduction(block, reduce_[0])
    _finish_tile(sch, sch.get_loops(init), v_factor, b_factor)
    if phases is not None:  # first: the padding producer is then computed before its new consumer
        depthwise.build_in_plane(sch, phases, sch.get_loops(block)[0])
    for pad in pads:
        depthwise.pad_per_plane(sch, pad, sch.get_loops(block)[0])


def _inline_consumers(sch: s_tir.Schedule, acc: SBlockRV) -> None:
    """Move the (already inlined) elementwise epilogue into the accumulator write-back."""
    for consumer in sch.get_consumers(acc):
        try:
            sch.reverse_compute_inline(consumer)
        except s_tir.ScheduleError:
            return


def _finish_tile(sch: s_tir.Schedule, loops: list[LoopRV], v_factor: int, b_factor: int) -> None:
    """Vectorize the tile's vector loop and unroll its block loop, never touching the parallel loop."""
    serial = [lp for lp in loops[-2:] if sch.get(lp).kind == tirx.ForKind.SERIAL]
    if v_factor > 1 and not serial:
        return  # decompose_reduction carried the update's loop kinds over to the init
    if v_factor > 1 and serial and _extent(sch, serial[-1]) == v_factor:
        sch.vectorize(serial.pop())
    if b_factor > 1 and serial and _extent(sch, serial[-1]) == b_factor:
        sch.unroll(serial[-1])


def _inline_elementwise(sch: s_tir.Schedule, name: str) -> s_tir.Schedule:
    """Fold a branch-free spatial block into its consumers (refused for outputs and reductions)."""
    block = sch.get_sblock(name)
    if REDUCE in _iter_kinds(sch, block) or _has_branch(sch.get(block)):
        return sch
    trial = sch.copy()
    try:
        trial.compute_inline(trial.get_sblock(name))
    except s_tir.ScheduleError:
        return sch
    return trial


def _apply(sch: s_tir.Schedule, name: str) -> s_tir.Schedule:
    """Schedule one block on a copy; the original schedule survives any refusal."""
    trial = sch.copy()
    try:
        block = trial.get_sblock(name)
    except s_tir.ScheduleError:
        return sch  # inlined into a reduction's write-back by an earlier rule
    loops = _own_loops(trial, block)
    if loops is None:
        return sch
    try:
        if REDUCE in _iter_kinds(trial, block):
            schedule_reduction(trial, block, loops)
        else:
            schedule_spatial(trial, block, loops)
    except (s_tir.ScheduleError, ValueError, tvm.error.InternalError):
        return sch
    return trial


def schedule_func(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """A function holding a packed kernel gets the kernel's schedule (packed.schedule_fused); any
    other gets the rules, applied to every root-level block."""
    if func.attrs is not None and SCHEDULED_ATTR in func.attrs:
        return func
    kernel = packed.schedule_fused(func)
    if kernel is not None:
        return kernel
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    try:
        root = sch.get_sblock("root")
    except s_tir.ScheduleError:
        return func
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(root)]
    for name in names:
        sch = _inline_elementwise(sch, name)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    # reductions first: a window reduction moves its padding producer under its own plane loop
    names = sorted(
        (sch.get(b).name_hint for b in blocks),
        key=lambda n: REDUCE not in _iter_kinds(sch, sch.get_sblock(n)),
    )
    for name in names:
        sch = _apply(sch, name)
    return sch.mod["main"].with_attr(SCHEDULED_ATTR, True)


@tvm.transform.module_pass(opt_level=0, name="tvmq.ScheduleCPU")
def schedule_cpu(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Module pass: schedule each PrimFunc of a legalized, fused Relax module."""
    updates = {gv: schedule_func(f) for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    for gv, f in updates.items():
        mod[gv] = f
    return mod
