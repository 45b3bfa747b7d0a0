"""compile_module must match tvm.compile exactly on int8 graphs (and closely on float graphs)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import graphs
from worker.kernels import compile_module, isa, packed, relax_pipeline
from worker.kernels.rewrite import kernel_counts

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


FLOAT_CONV_CASES = [
    # data shape, out channels, kernel, stride, pad, dilation: every packed float conv variant
    ((1, 3, 23, 23), 16, 7, 2, 3, 1),  # stem: 3 channels, stride 2
    ((1, 5, 9, 9), 10, 1, 1, 0, 1),  # 1x1, channels not a multiple of the 8-lane block
    ((1, 16, 14, 14), 24, 1, 2, 0, 1),  # 1x1 stride 2
    ((2, 8, 12, 12), 12, 3, 1, 2, 2),  # dilation 2, batch 2
    ((1, 12, 7, 7), 40, 3, 1, 1, 1),  # 7x7 map, 5 out blocks
    ((1, 9, 11, 13), 17, (2, 4), 1, (1, 2, 0, 1), 1),  # non-square kernel, asymmetric padding
]


@pytest.mark.parametrize("case", FLOAT_CONV_CASES, ids=str)
def test_float_conv_is_packed_and_close(case: tuple) -> None:
    shape, out_ch, kernel, stride, pad, dilation = case
    rng = np.random.default_rng(3)
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    w = rng.standard_normal((out_ch, shape[1], kh, kw)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), stride, pad, dilation))
        bb.emit_func_output(y)
    mod = bb.get()
    assert kernel_counts(compile_module(mod, TARGET).as_text()) == {("avx2", "f32"): 1}
    _compare(mod, rng.standard_normal(shape).astype(np.float32))


def test_float_residual_epilogue_runs_in_the_kernel() -> None:
    """conv + bias + residual add + relu: one fused function with the packed kernel, no other op."""
    rng = np.random.default_rng(4)
    shape = (1, 16, 10, 10)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    bias = rng.standard_normal((1, 16, 1, 1)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), 1, 1))
            y = bb.emit(relax.op.nn.relu(relax.op.add(relax.op.add(y, relax.const(bias)), x)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = bb.get()
    executable = compile_module(mod, TARGET)
    calls = [line.split()[1] for line in executable.as_text().splitlines() if line.strip().startswith("call")]
    kernels = [c for c in calls if not c.startswith("vm.builtin")]
    assert len(kernels) == 1 and kernels[0].startswith("fused_tvmq_avx2_f32_kernel"), kernels
    _compare(mod, rng.standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize(("a_shape", "n_out"), [((16, 64), 20), ((2, 3, 40), 33), ((1, 512), 1000)], ids=str)
def test_float_matmul_is_packed_and_close(a_shape: tuple[int, ...], n_out: int) -> None:
    rng = np.random.default_rng(12)
    mod = graphs.matmul("float32", a_shape, n_out, rng)
    assert kernel_counts(compile_module(mod, TARGET).as_text()) == {("avx2", "f32"): 1}
    _compare(mod, rng.standard_normal(a_shape).astype(np.float32))


def _unrolled_copies(func: tvm.tirx.PrimFunc) -> int:
    """The most copies of one statement that nested unrolled loops make."""
    pattern = re.compile(r"^( *)for \w+ in T\.unroll\((?:T\.int64\()?(\d+)")
    stack: list[tuple[int, int]] = []  # (indent, extent) of the open unrolled loops
    most = 1
    for line in func.script().splitlines():
        indent = len(line) - len(line.lstrip())
        stack = [(i, e) for i, e in stack if i < indent]
        if m := pattern.match(line):
            stack.append((len(m.group(1)), int(m.group(2))))
            most = max(most, math.prod(e for _, e in stack))
    return most


def test_a_broadcast_epilogue_is_not_unrolled_over_the_feature_map() -> None:
    """A squeeze-excite gate: a 1x1 conv on the pooled map, fused with the multiply of the whole
    32x32 map. The write-back may unroll the register tile, not the 1024 pixels of the multiply
    (LLVM took minutes on that), and vectorizes the map's rows; the result matches TVM's build."""
    rng = np.random.default_rng(5)
    shape = (1, 16, 32, 32)
    w = rng.standard_normal((16, 16, 1, 1)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            pooled = bb.emit(relax.op.mean(x, axis=[2, 3], keepdims=True))
            gate = bb.emit(relax.op.sigmoid(relax.op.nn.conv2d(pooled, relax.const(w))))
            out = bb.emit_output(relax.op.multiply(x, gate))
        bb.emit_func_output(out)
    mod = bb.get()
    with TARGET:
        lowered = relax_pipeline(TARGET)(mod)
    kernels = [f for gv, f in lowered.functions.items() if "tvmq_avx2_f32_kernel" in gv.name_hint]
    fused = [f for f in kernels if f.attrs is not None and f.attrs.get("tvmq_scheduled")]
    assert fused, "the gate's conv is a packed kernel with its epilogue"
    assert max(map(_unrolled_copies, fused)) <= 64  # a register tile, not the map's 1024 pixels
    # the multiply walks the map's contiguous rows (32 wide), not the channels across NCHW planes
    assert all("T.vectorized(T.int64(32))" in f.script() for f in fused)
    called = lowered["main"].script()  # the unfused kernel is not compiled into the library too
    assert all(gv.name_hint in called for gv in lowered.get_global_vars() if gv.name_hint != "main")
    _compare(mod, rng.standard_normal(shape).astype(np.float32))


def test_an_epilogue_that_pads_writes_the_border() -> None:
    """conv + relu + an asymmetric pad (what the importer emits for an even SAME_UPPER conv): FuseOps
    puts the pad into the kernel, and the padded output has a border no register tile produces. Every
    element is written: into an output buffer full of garbage (the VM reuses its pool), the kernel
    alone gives TVM's result."""
    rng = np.random.default_rng(6)
    shape = (1, 16, 10, 12)
    w = rng.integers(-60, 60, (16, 16, 1, 1)).astype(np.int8)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w), out_dtype="int32")))
            out = bb.emit_output(relax.op.nn.pad(y, [0, 0, 0, 0, 0, 1, 0, 1]))
        bb.emit_func_output(out)
    mod = bb.get()
    data = rng.integers(-128, 128, shape).astype(np.int8)
    expected = graphs.run(tvm.compile(mod, TARGET), data)
    with TARGET:
        lowered = relax_pipeline(TARGET)(mod)
    (name,) = [gv.name_hint for gv in lowered.get_global_vars() if "_pad" in gv.name_hint]
    assert "kernel" in name, "the pad is fused into the packed kernel"
    kernel = lowered[name].with_attr("global_symbol", "main")
    bindings = [b.value for block in lowered["main"].body.blocks for b in block.bindings]
    call = next(v for v in bindings if isinstance(v, relax.Call) and getattr(v.op, "name_hint", "") == name)
    args = [data] + [a.value.numpy() for a in call.args[1:-1]]  # the packed weights; then the output
    library = tvm.tirx.build(tvm.IRModule({"main": kernel}), target=TARGET)
    result = tvm.runtime.tensor(np.full(expected.shape, 12345, expected.dtype))
    library["main"](*map(tvm.runtime.tensor, args), result)
    np.testing.assert_array_equal(result.numpy(), expected)
