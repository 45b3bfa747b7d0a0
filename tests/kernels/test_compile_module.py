"""compile_module must match tvm.compile exactly on int8 graphs (and closely on float graphs)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from tests.kernels import graphs
from worker.kernels import compile_module, isa, packed

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})

CONV_CASES = [
    # dtype, data shape, out channels, kernel, stride, pad, groups, weight limit
    ("int8", (1, 8, 14, 14), 16, 3, 1, 1, 1, 127),
    ("int8", (1, 8, 14, 14), 16, 3, 1, 1, 1, 63),
    ("int8", (1, 8, 15, 15), 24, 3, 2, 1, 1, 127),
    ("int8", (1, 3, 17, 17), 16, 7, 2, 3, 1, 63),
    ("int8", (1, 5, 9, 9), 10, 1, 1, 0, 1, 127),
    ("int8", (1, 16, 14, 14), 16, 3, 1, 1, 16, 127),
    ("int8", (1, 16, 15, 15), 16, 3, 2, 1, 16, 127),
    ("int8", (1, 8, 14, 14), 16, 3, 1, 1, 2, 127),
    ("float32", (1, 8, 14, 14), 16, 3, 1, 1, 1, 0),
    ("float32", (1, 8, 15, 15), 16, 3, 2, 1, 1, 0),
    ("float32", (1, 16, 14, 14), 16, 3, 1, 1, 16, 0),
    ("float32", (1, 8, 14, 14), 16, 3, 1, 1, 4, 0),
]


def _compare(mod: tvm.IRModule, x: np.ndarray) -> None:
    expected = graphs.run(tvm.compile(mod, TARGET), x)
    actual = graphs.run(compile_module(mod, TARGET), x)
    if x.dtype == np.int8:
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv2d_matches_default_build(case: tuple) -> None:
    dtype, shape, out_ch, kernel, stride, pad, groups, limit = case
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    mod = graphs.raw_conv(dtype, shape, out_ch, kernel, stride, pad, groups, rng, limit)
    _compare(mod, graphs.extreme_input(dtype, shape, rng))


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_conv_requantize_pool_block_matches(dtype: str) -> None:
    rng = np.random.default_rng(7)
    mod = graphs.conv_block(dtype, (1, 8, 16, 16), 16, 3, 1, 1, 1, rng)
    _compare(mod, graphs.extreme_input(dtype, (1, 8, 16, 16), rng))


@pytest.mark.parametrize(
    ("dtype", "a_shape", "n_out", "limit"),
    [
        ("int8", (3, 100), 24, 127),
        ("int8", (1, 256), 64, 63),
        ("int8", (2, 3, 64), 20, 127),
        ("float32", (4, 64), 20, 0),
    ],
)
def test_matmul_matches_default_build(dtype: str, a_shape: tuple[int, ...], n_out: int, limit: int) -> None:
    rng = np.random.default_rng(11)
    mod = graphs.matmul(dtype, a_shape, n_out, rng, limit)
    _compare(mod, graphs.extreme_input(dtype, a_shape, rng))


def test_weight_pairs_pick_the_exact_mode() -> None:
    """vpmaddubsw saturates past |w0|+|w1| = 128; such weights must go to the int16 path."""
    u8s8, s16 = isa.AVX2.dots
    assert packed.pack_weights(np.full((8, 8), 64, np.int8), isa.AVX2)[2] is u8s8
    assert packed.pack_weights(np.full((8, 8), -64, np.int8), isa.AVX2)[2] is u8s8
    edge = np.zeros((8, 8), np.int8)
    edge[3, 4:6] = (-128, 1)
    assert packed.pack_weights(edge, isa.AVX2)[2] is s16


def test_target_without_avx2_keeps_default_int8_lowering() -> None:
    """A plain "llvm" target has no AVX2: no packed kernels, still the exact same results."""
    generic = tvm.target.Target({"kind": "llvm"})
    rng = np.random.default_rng(5)
    mod = graphs.raw_conv("int8", (1, 8, 14, 14), 16, 3, 1, 1, 1, rng)
    x = graphs.extreme_input("int8", (1, 8, 14, 14), rng)
    expected = graphs.run(tvm.compile(mod, generic), x)
    np.testing.assert_array_equal(graphs.run(compile_module(mod, generic), x), expected)
