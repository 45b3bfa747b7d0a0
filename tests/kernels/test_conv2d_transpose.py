"""conv2d_transpose with stride = kernel (the upsampling of DB/U-Net heads) runs as a packed 1x1
kernel whose write-back scatters each pixel's s x s block; it must equal TVM's own lowering
exactly on int8 (both dot products) and closely on float32, epilogue included."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import graphs
from worker.kernels import compile_module
from worker.kernels.rewrite import kernel_counts

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})


def _transpose(
    dtype: str,
    shape: tuple[int, int, int, int],
    out_channels: int,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    padding: tuple[int, int, int, int],
    rng: np.random.Generator,
    weight_limit: int,
    epilogue: bool,
) -> tvm.IRModule:
    """conv2d_transpose, bare (int32 accumulators out) or with a requantize + relu epilogue."""
    w_shape = (shape[1], out_channels, *kernel)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        if dtype == "int8":
            w = rng.integers(-weight_limit - 1, weight_limit + 1, size=w_shape).astype(np.int8)
            w.flat[:4] = [-128, -128, 127, 127] if weight_limit == 127 else w.flat[:4]
            y = bb.emit(relax.op.nn.conv2d_transpose(x, relax.const(w), strides, padding, out_dtype="int32"))
            if epilogue:  # realize's int32 requantize: bias, clamp so the multiply cannot overflow, shift
                bias = rng.integers(-5000, 5000, size=(1, out_channels, 1, 1)).astype(np.int32)
                y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(bias))))
                y = bb.emit(relax.op.clip(y, -(1 << 17), 1 << 17))
                mult = rng.integers(1 << 10, 1 << 13, size=(1, out_channels, 1, 1)).astype(np.int32)
                y = bb.emit(relax.op.multiply(y, relax.const(mult, "int32")))
                y = bb.emit(relax.op.right_shift(relax.op.add(y, relax.const(1 << 20)), relax.const(21)))
                y = bb.emit(relax.op.astype(relax.op.clip(y, -127, 127), "int8"))
        else:
            w = rng.standard_normal(w_shape).astype(np.float32)
            y = bb.emit(relax.op.nn.conv2d_transpose(x, relax.const(w), strides, padding))
            if epilogue:
                bias = rng.standard_normal((1, out_channels, 1, 1)).astype(np.float32)
                y = bb.emit(relax.op.sigmoid(relax.op.add(y, relax.const(bias))))
        bb.emit_func_output(y)
    return bb.get()


CASES = [
    # dtype, data shape, out channels, kernel, weight limit (127: s16 path, 63: u8s8), epilogue
    ("int8", (1, 16, 10, 12), 16, (2, 2), 127, False),
    ("int8", (1, 16, 10, 12), 16, (2, 2), 63, False),
    ("int8", (1, 16, 9, 7), 1, (2, 2), 127, True),  # one output channel, odd map (the DB head's last)
    ("int8", (2, 5, 6, 5), 3, (3, 2), 127, True),  # batch 2, non-square s x s, channels off the lane block
    ("float32", (1, 16, 10, 12), 16, (2, 2), 0, False),
    ("float32", (1, 16, 9, 7), 1, (2, 2), 0, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_stride_equal_to_kernel_is_packed_and_matches(case: tuple) -> None:
    dtype, shape, out_ch, kernel, limit, epilogue = case
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    mod = _transpose(dtype, shape, out_ch, kernel, kernel, (0, 0, 0, 0), rng, limit, epilogue)
    built = compile_module(mod, TARGET)
    (dot,) = kernel_counts(built.as_text())
    assert dot[0] == "avx2" and dot[1] == ("f32" if dtype == "float32" else "s16" if limit == 127 else "u8s8")
    x = graphs.extreme_input(dtype, shape, rng)
    expected = graphs.run(tvm.compile(mod, TARGET), x)
    actual = graphs.run(built, x)
    if dtype == "int8":
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kernel", "strides", "padding"),
    [((3, 3), (2, 2), (0, 0, 0, 0)), ((2, 2), (2, 2), (1, 1, 1, 1))],
    ids=["overlapping-windows", "padded"],
)
def test_other_transposes_keep_tvm_lowering(kernel: tuple, strides: tuple, padding: tuple) -> None:
    """Overlapping windows (stride < kernel) or a cropped output are not one block per pixel."""
    rng = np.random.default_rng(2)
    mod = _transpose("int8", (1, 8, 6, 6), 8, kernel, strides, padding, rng, 127, True)
    built = compile_module(mod, TARGET)
    assert not kernel_counts(built.as_text())
    x = graphs.extreme_input("int8", (1, 8, 6, 6), rng)
    np.testing.assert_array_equal(graphs.run(built, x), graphs.run(tvm.compile(mod, TARGET), x))
