"""Window reductions (depthwise conv, pooling): one input plane per output plane, a small window.

The generic reduction rule tiles them like any conv; these rules make the plane the unit of work
instead: planes are the parallel loop, each thread builds its padded plane next to its use (a
vectorized constant fill and interior copy, from `decompose_padding`), and a strided window reads a
copy of that plane split into column phases, so every tap of the window is one contiguous vector
load instead of a gather.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV
from tvm.sym import detect_linear_equation
from tvm.tirx.function import IndexMap

#: Reductions this small (3x3, 5x5 windows, a few grouped channels) run plane by plane.
WINDOW_MAX_REDUCTION = 64
#: Output rows per register tile, one accumulator register per row.
ROW_FACTORS = (4, 3, 2)
VECTOR_BITS = 256


def tile(rows: int, columns: int, accumulator_bits: int, vector: bool) -> tuple[int, int]:
    """(row factor, column vector factor) of the register tile.

    One register per output row: the vector is the longest divisor of the row that fits one AVX2
    register of the accumulator type (7 lanes for 28/14/7-wide rows measured faster than 14- or
    28-lane vectors that LLVM splits into 8+4+2 pieces), stacked over up to 4 rows. Rows with no
    such divisor (13, 17) are vectorized whole when short: split pieces beat scalar code.
    """
    lanes = VECTOR_BITS // accumulator_bits
    v = max(d for d in range(1, min(columns, lanes) + 1) if columns % d == 0)
    if 2 * v < lanes and columns <= 4 * lanes:
        v = columns
    return next((f for f in ROW_FACTORS if rows % f == 0), 1), v if vector else 1


def is_window(block: tirx.Stmt, extents: list[int]) -> bool:
    """A small window sliding along the output columns: depthwise conv or pooling.

    Some read's last index must move with both the output column and a reduction iterator
    (x * stride + rx); a matmul or a global pooling with a short reduction does not qualify.
    """
    window = 1
    for e in extents:
        window *= e
    if not 0 < window <= WINDOW_MAX_REDUCTION:
        return False
    column = [iv.var for iv in block.iter_vars if int(iv.iter_type) == 0][-1]
    reduce_ = [iv.var for iv in block.iter_vars if int(iv.iter_type) == 2]
    for region in block.reads:
        steps = detect_linear_equation(region.region[-1].min, [column, *reduce_])
        if len(steps) > 1 and _nonzero(steps[0]) and any(_nonzero(c) for c in steps[1:-1]):
            return True
    return False


def _nonzero(coefficient: tirx.PrimExpr) -> bool:
    return not isinstance(coefficient, tirx.IntImm) or coefficient.value != 0


def pad_per_plane(sch: s_tir.Schedule, pad: SBlockRV, plane_loop: LoopRV) -> None:
    """Build each padded plane inside the parallel plane loop: a constant fill, then the interior copy."""
    try:
        sch.compute_at(pad, plane_loop)
        fill = sch.decompose_padding(pad, sch.get_loops(pad)[1])
    except s_tir.ScheduleError:
        return  # shared with another consumer, or not a constant pad: stays a whole-tensor block
    for blk in (fill, pad):
        sch.vectorize(sch.get_loops(blk)[-1])


def _column_stride(block: tirx.Stmt, region: object) -> int:
    """Step of the read's last index per output column (the block's last spatial iterator)."""
    column = [iv.var for iv in block.iter_vars if int(iv.iter_type) == 0][-1]
    coefficients = detect_linear_equation(region.region[-1].min, [column])
    step = coefficients[0] if len(coefficients) == 2 else None
    return int(step.value) if isinstance(step, tirx.IntImm) else 1


def split_column_phases(sch: s_tir.Schedule, block: SBlockRV) -> SBlockRV | None:
    """For a window with column stride s: a copy of its input laid out as [row][phase][column / s].

    Call it before the input's producer is moved or decomposed (the copy is made at the root);
    `build_in_plane` then moves it under the plane loop.
    """
    stmt = sch.get(block)
    strides = [_column_stride(stmt, r) if len(r.region) >= 3 else 1 for r in stmt.reads]
    index = next((i for i, s in enumerate(strides) if s > 1), None)
    if index is None:
        return None
    stride = strides[index]

    phases = IndexMap.from_func(
        lambda *idx: (*idx[:-1], idx[-1] % stride, idx[-1] // stride), ndim=len(stmt.reads[index].region)
    )
    cache = sch.cache_read(block, index, "global")
    sch.transform_layout(cache, ("write", 0), phases, pad_value=0)
    if len(sch.get(cache).iter_vars) == len(phases.initial_indices):
        sch.transform_block_layout(cache, phases)  # a padded layout already re-iterates the block
    return cache


def build_in_plane(sch: s_tir.Schedule, block: SBlockRV, plane_loop: LoopRV) -> None:
    """Compute a per-plane copy inside the plane loop, vectorized along its columns."""
    sch.compute_at(block, plane_loop)
    sch.vectorize(sch.get_loops(block)[-1])
