"""Small Relax graphs shaped like the quantizer's realize output (and their float twins)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def conv_block(
    dtype: str,
    data_shape: tuple[int, int, int, int],
    out_channels: int,
    kernel: int,
    stride: int,
    pad: int,
    groups: int,
    rng: np.random.Generator,
    weight_limit: int = 127,
) -> tvm.IRModule:
    """conv2d (+ int8 requantize epilogue or float bias/relu) + max_pool2d."""
    c = data_shape[1]
    w_shape = (out_channels, c // groups, kernel, kernel)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            if dtype == "int8":
                w = rng.integers(-weight_limit - 1, weight_limit + 1, size=w_shape).astype(np.int8)
                y = bb.emit(
                    relax.op.nn.conv2d(x, relax.const(w), stride, pad, groups=groups, out_dtype="int32")
                )
                bias = rng.integers(-5000, 5000, size=(1, out_channels, 1, 1)).astype(np.int32)
                y = bb.emit(relax.op.add(y, relax.const(bias)))
                y = bb.emit(relax.op.astype(y, "int64"))
                mult = rng.integers(1 << 10, 1 << 14, size=(1, out_channels, 1, 1)).astype(np.int64)
                y = bb.emit(relax.op.multiply(y, relax.const(mult, "int64")))
                y = bb.emit(relax.op.right_shift(y, relax.const(24, "int64")))
                y = bb.emit(relax.op.clip(y, -128, 127))
                y = bb.emit(relax.op.astype(y, "int8"))
                y = bb.emit(relax.op.nn.relu(y))
            else:
                w = rng.standard_normal(w_shape).astype(np.float32)
                y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), stride, pad, groups=groups))
                bias = rng.standard_normal((1, out_channels, 1, 1)).astype(np.float32)
                y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(bias))))
            y = bb.emit(relax.op.nn.max_pool2d(y, 2, 2))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def raw_conv(dtype: str, data_shape, out_channels, kernel, stride, pad, groups, rng, weight_limit=127):
    """A bare conv2d whose int32 accumulator is the output, so any error shows unrounded."""
    c = data_shape[1]
    w_shape = (out_channels, c // groups, kernel, kernel)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, dtype))
    with bb.function("main", [x]):
        if dtype == "int8":
            w = rng.integers(-weight_limit - 1, weight_limit + 1, size=w_shape).astype(np.int8)
            w.flat[: min(w.size, 8)] = [-128, -128, 127, 127, -128, 127, 127, -128][: min(w.size, 8)]
            out = bb.emit(
                relax.op.nn.conv2d(x, relax.const(w), stride, pad, groups=groups, out_dtype="int32")
            )
        else:
            w = rng.standard_normal(w_shape).astype(np.float32)
            out = bb.emit(relax.op.nn.conv2d(x, relax.const(w), stride, pad, groups=groups))
        bb.emit_func_output(out)
    return bb.get()


def matmul(dtype: str, a_shape: tuple[int, ...], n_out: int, rng: np.random.Generator, weight_limit=127):
    """a @ constant (K, N) weight, int8 -> int32 or float32."""
    k = a_shape[-1]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(a_shape, dtype))
    with bb.function("main", [x]):
        if dtype == "int8":
            w = rng.integers(-weight_limit - 1, weight_limit + 1, size=(k, n_out)).astype(np.int8)
            out = bb.emit(relax.op.matmul(x, relax.const(w), out_dtype="int32"))
        else:
            w = rng.standard_normal((k, n_out)).astype(np.float32)
            out = bb.emit(relax.op.matmul(x, relax.const(w)))
        bb.emit_func_output(out)
    return bb.get()


def extreme_input(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """int8 inputs saturated at -128/127 (the vpmaddubsw trap) mixed with random values."""
    if dtype != "int8":
        return rng.standard_normal(shape).astype(np.float32)
    x = rng.integers(-128, 128, size=shape).astype(np.int8)
    mask = rng.random(shape)
    x[mask < 0.3] = -128
    x[mask > 0.7] = 127
    return x


def fused(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalized and fused like the build pipeline, before any schedule: what schedule_func sees."""
    with target:
        return tvm.transform.Sequential(
            [
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
            ]
        )(mod)


def run(ex: tvm.relax.VMExecutable, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def depthwise_requant(
    data_shape: tuple[int, int, int, int],
    kernel: int,
    stride: int,
    pad: int,
    rng: np.random.Generator,
    pool: tuple[int, int, int] | None = None,
) -> tvm.IRModule:
    """Depthwise int8 conv + the realize step's int32 requantize (bound, rounding multiply, shift),
    optionally followed by an int8 max_pool2d (kernel, stride, pad)."""
    c = data_shape[1]
    per_channel = (1, c, 1, 1)
    w = rng.integers(-128, 128, size=(c, 1, kernel, kernel)).astype(np.int8)
    w[0] = -128  # the most negative window meets a -128 input plane in the tests
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, "int8"))

    def const(values: np.ndarray) -> relax.Expr:
        return relax.const(values.astype(np.int32).reshape(per_channel))

    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), stride, pad, groups=c, out_dtype="int32"))
            y = bb.emit(relax.op.add(y, const(rng.integers(-5000, 5000, size=c))))
            y = bb.emit(relax.op.nn.relu(y))
            y = bb.emit(relax.op.minimum(y, const(rng.integers(1 << 14, 1 << 17, size=c))))
            y = bb.emit(relax.op.right_shift(y, const(rng.integers(0, 3, size=c))))
            y = bb.emit(relax.op.multiply(y, const(rng.integers(1 << 8, 1 << 14, size=c))))
            y = bb.emit(relax.op.add(y, const(np.full(c, 1 << 15))))
            y = bb.emit(relax.op.right_shift(y, const(np.full(c, 16))))
            y = bb.emit(relax.op.astype(relax.op.clip(y, -127, 127), "int8"))
            if pool is not None:
                y = bb.emit(relax.op.nn.max_pool2d(y, pool[0], pool[1], pool[2]))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def max_pool(
    data_shape: tuple[int, ...], kernel: int, stride: int, pad: int, dtype: str = "int8"
) -> tvm.IRModule:
    """A bare max_pool2d: its padding value (the dtype's minimum) must never win."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, dtype))
    with bb.function("main", [x]):
        out = bb.emit(relax.op.nn.max_pool2d(x, kernel, stride, pad))
        bb.emit_func_output(out)
    return bb.get()
