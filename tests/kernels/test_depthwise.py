"""Depthwise int8 conv and int8 max_pool2d: exact equality with tvm.compile on saturated inputs.

The window-reduction schedule builds padded planes per channel and inlines the requantize epilogue
into the accumulator write-back; these cases cover its edges (stride 1/2, pad 0/1/2, 3x3 and 5x5,
channel counts and widths that are not multiples of the vector width, odd sizes).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import s_tir, tirx

from tests.kernels import graphs
from worker.kernels import compile_module, depthwise, schedule

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})

DEPTHWISE_CASES = [
    # data shape, kernel, stride, pad
    ((1, 16, 14, 14), 3, 1, 1),
    ((1, 12, 15, 15), 3, 2, 1),
    ((1, 5, 9, 11), 3, 1, 0),
    ((1, 7, 13, 13), 3, 2, 0),
    ((1, 9, 17, 17), 5, 1, 2),
    ((1, 6, 16, 19), 5, 2, 2),
    ((2, 3, 7, 7), 3, 2, 1),
    ((1, 24, 56, 56), 3, 2, 1),
]


def _assert_same(mod: tvm.IRModule, x: np.ndarray) -> None:
    expected = graphs.run(tvm.compile(mod, TARGET), x)
    np.testing.assert_array_equal(graphs.run(compile_module(mod, TARGET), x), expected)


def _saturated(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    x = graphs.extreme_input("int8", shape, rng)
    x[:, 0] = -128  # channel 0's weights are all -128: the largest positive accumulator
    return x


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_depthwise_requantize_is_exact(case: tuple) -> None:
    shape, kernel, stride, pad = case
    rng = np.random.default_rng(sum(shape) * 31 + kernel * 7 + stride * 3 + pad)
    _assert_same(graphs.depthwise_requant(shape, kernel, stride, pad, rng), _saturated(shape, rng))


def test_depthwise_raw_accumulator_is_exact() -> None:
    rng = np.random.default_rng(5)
    shape = (1, 10, 13, 13)
    mod = graphs.raw_conv("int8", shape, 10, 3, 2, 1, 10, rng)
    _assert_same(mod, _saturated(shape, rng))


def test_depthwise_then_max_pool_is_exact() -> None:
    rng = np.random.default_rng(9)
    shape = (1, 8, 20, 20)
    _assert_same(graphs.depthwise_requant(shape, 3, 1, 1, rng, pool=(3, 2, 1)), _saturated(shape, rng))


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "pad"),
    [
        ((1, 16, 28, 28), 3, 2, 1),
        ((1, 5, 15, 15), 3, 2, 1),
        ((1, 3, 9, 10), 2, 2, 0),
        ((2, 4, 11, 11), 3, 1, 1),
    ],
    ids=str,
)
def test_max_pool_int8_is_exact(shape: tuple[int, ...], kernel: int, stride: int, pad: int) -> None:
    x = graphs.extreme_input("int8", shape, np.random.default_rng(3))
    x[:, :, :2, :2] = -128  # a corner window of -128 values next to the -128 padding
    _assert_same(graphs.max_pool(shape, kernel, stride, pad), x)


@pytest.mark.parametrize(
    "mod",
    [
        graphs.depthwise_requant((1, 12, 15, 15), 3, 2, 1, np.random.default_rng(0)),
        graphs.depthwise_requant((1, 12, 16, 16), 5, 1, 0, np.random.default_rng(0)),
        graphs.max_pool((1, 16, 28, 28), 3, 2, 1),
    ],
    ids=["depthwise-s2-pad1", "depthwise-k5-pad0", "max-pool-s2"],
)
def test_window_schedule_is_one_parallel_vectorized_pass(mod: tvm.IRModule) -> None:
    """Pad fill, interior copy, column phases, init, update and the write-back (with the whole
    requantize epilogue inlined) all sit under one parallel plane loop, each vectorized."""
    (func,) = [f for f in graphs.fused(mod, TARGET).functions.values() if isinstance(f, tirx.PrimFunc)]
    sch = s_tir.Schedule(tvm.IRModule({"main": schedule.schedule_func(func)}))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    assert len(blocks) <= 6, [sch.get(b).name_hint for b in blocks]
    for block in blocks:
        kinds = [sch.get(lp).kind for lp in sch.get_loops(block)]
        assert kinds[0] == tirx.ForKind.PARALLEL and kinds[-1] == tirx.ForKind.VECTORIZED, sch.get(block)


@pytest.mark.parametrize(
    ("rows", "columns", "bits", "expected"),
    [
        (56, 56, 32, (4, 8)),
        (28, 28, 32, (4, 7)),
        (14, 14, 32, (2, 7)),
        (13, 13, 32, (1, 13)),
        (56, 56, 8, (4, 28)),
    ],
)
def test_tile_keeps_one_register_per_row(
    rows: int, columns: int, bits: int, expected: tuple[int, int]
) -> None:
    assert depthwise.tile(rows, columns, bits, vector=True) == expected


def _float_convs(mod: tvm.IRModule) -> list[str]:
    """The result dtypes of the conv2d calls left after our rewrite."""
    from worker.kernels import isa
    from worker.kernels.rewrite import rewrite_packed

    text = rewrite_packed(isa.AVX2, with_float=True)(mod).script()
    return [line.split('dtype="')[1].split('"')[0] for line in text.splitlines() if "R.nn.conv2d(" in line]


@pytest.mark.parametrize(
    ("shape", "out", "kernel", "groups"),
    [
        ((1, 128, 6, 6), 4, 4, 2),  # 64 channels x 4 x 4 = 1024 taps: sums reach 2**24, still exact
        ((1, 16, 9, 9), 16, 3, 16),
    ],
    ids=["1024-taps", "depthwise"],
)
def test_grouped_int8_runs_exactly_in_float(
    shape: tuple[int, ...], out: int, kernel: int, groups: int
) -> None:
    """Grouped int8 convs are computed in float32, exact while a window has at most 1024 taps;
    the all -128 window is the largest sum, 2**24 for 1024 taps."""
    rng = np.random.default_rng(2)
    mod = graphs.raw_conv("int8", shape, out, kernel, 1, 0, groups, rng)
    x = np.full(shape, -128, np.int8)
    weight = mod["main"].body.blocks[0].bindings[0].value.args[1].value.numpy()
    assert weight.min() == -128
    assert _float_convs(mod) == ["float32"]
    _assert_same(mod, x)
    _assert_same(mod, _saturated(shape, rng))


def test_grouped_int8_beyond_1024_taps_or_strided_stays_int32() -> None:
    mod = graphs.raw_conv("int8", (1, 130, 6, 6), 2, 4, 1, 0, 2, np.random.default_rng(2))
    assert _float_convs(mod) == ["int32"]
    mod = graphs.raw_conv("int8", (1, 16, 9, 9), 16, 3, 2, 1, 16, np.random.default_rng(2))
    assert _float_convs(mod) == ["int32"]
