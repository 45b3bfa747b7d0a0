"""Bench models from one layer spec: a float ONNX graph and a hand-written int8 Relax twin.

The int8 twin has the shape of our quantizer's realize output (int8 x int8 -> int32 conv2d/matmul,
int32 bias, int32 fixed-point requantize, clip, int8 relu/max_pool, int32 residual add)
with random weights, so its speed is what a quantized artifact of the same architecture costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from worker.quantize.qtensor import fixed_point


@dataclass(frozen=True)
class Model:
    name: str
    input_shape: tuple[int, ...]
    layers: tuple[tuple, ...]


RESNET = Model(
    "resnet_cnn_224",
    (1, 3, 224, 224),
    (
        ("conv", 64, 7, 2, 1, True),
        ("maxpool", 3, 2, 1),
        ("res", 64, 1),
        ("res", 64, 1),
        ("res", 128, 2),
        ("res", 256, 2),
        ("res", 512, 2),
        ("gap",),
        ("fc", 1000),
    ),
)
MOBILENET = Model(
    "mobilenet_dw_224",
    (1, 3, 224, 224),
    (
        ("conv", 32, 3, 2, 1, True),
        *(
            layer
            for c_in, c_out, s in (
                (32, 64, 1),
                (64, 128, 2),
                (128, 128, 1),
                (128, 256, 2),
                (256, 256, 1),
                (256, 512, 2),
                (512, 512, 1),
                (512, 1024, 2),
            )
            for layer in (("conv", c_in, 3, s, c_in, True), ("conv", c_out, 1, 1, 1, True))
        ),
        ("gap",),
        ("fc", 1000),
    ),
)
MLP = Model("mlp_block", (16, 512), (("fc", 2048, True), ("fc", 2048, True), ("fc", 512, False)))
MODELS = (RESNET, MOBILENET, MLP)


class _Onnx:
    """Accumulates ONNX nodes and initializers with fresh names."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.nodes, self.inits, self.n = rng, [], [], 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: np.ndarray) -> str:
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int, s: int, groups: int, relu: bool) -> str:
        fan_in = c_in // groups * k * k
        w = self.rng.standard_normal((c_out, c_in // groups, k, k)) * math.sqrt(2.0 / fan_in)
        b = self.rng.standard_normal(c_out) * 0.1
        y = self.node(
            "Conv",
            [x, self.const(w), self.const(b)],
            kernel_shape=[k, k],
            strides=[s, s],
            pads=[k // 2] * 4,
            group=groups,
        )
        return self.node("Relu", [y]) if relu else y


def to_onnx(model: Model, seed: int = 0) -> onnx.ModelProto:
    """The float model, random He-initialized weights, opset 17."""
    g = _Onnx(np.random.default_rng(seed))
    x, c = "x", model.input_shape[1]
    for layer in model.layers:
        kind = layer[0]
        if kind == "conv":
            _, c_out, k, s, groups, relu = layer
            x, c = g.conv(x, c, c_out, k, s, groups, relu), c_out
        elif kind == "maxpool":
            _, k, s, p = layer
            x = g.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
        elif kind == "res":
            _, c_out, s = layer
            y = g.conv(g.conv(x, c, c_out, 3, s, 1, True), c_out, c_out, 3, 1, 1, False)
            short = x if (s == 1 and c == c_out) else g.conv(x, c, c_out, 1, s, 1, False)
            x, c = g.node("Relu", [g.node("Add", [y, short])]), c_out
        elif kind == "gap":
            x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
        elif kind == "fc":
            relu = layer[2] if len(layer) > 2 else False
            w = g.rng.standard_normal((c, layer[1])) * math.sqrt(2.0 / c)
            x = g.node(
                "Add", [g.node("MatMul", [x, g.const(w)]), g.const(g.rng.standard_normal(layer[1]) * 0.1)]
            )
            x, c = (g.node("Relu", [x]) if relu else x), layer[1]
    out_shape = [model.input_shape[0], c]
    graph = helper.make_graph(
        g.nodes,
        model.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(model.input_shape))],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, out_shape)],
        g.inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


class _Int8:
    """Emits the realize-style int8 ops into a BlockBuilder."""

    def __init__(self, bb: relax.BlockBuilder, rng: np.random.Generator, weight_bits: int) -> None:
        self.bb, self.rng, self.wmax = bb, rng, 2 ** (weight_bits - 1) - 1

    def weights(self, shape: tuple[int, ...], axis: int) -> np.ndarray:
        """Per-channel max-scaled weights: every channel reaches +-wmax, like a real quantizer's."""
        g = self.rng.standard_normal(shape)
        peak = np.abs(g).max(axis=tuple(i for i in range(g.ndim) if i != axis), keepdims=True)
        return np.round(g / peak * self.wmax).astype(np.int8)

    def requant(
        self, acc: relax.Expr, channels: int, fan_in: int, relu: bool, axis_shape: tuple
    ) -> relax.Expr:
        """The realize step's int32 requantize: bound, rounding pre-shift to 16 bits, 14-bit
        multiply, rounding shift, clip (worker/quantize/qtensor.py `_requantize_int32`)."""
        bb = self.bb
        bias = self.rng.integers(-2000, 2000, size=axis_shape).astype(np.int32)
        ratio = 127.0 / (3.0 * math.sqrt(fan_in) * 40.0 * self.wmax / 2.5)
        bound = int(min(math.floor(128 / ratio), 2**31 - 1))
        pre = max(math.ceil(math.log2(bound + 1)) - 16, 0)
        mult, shift = (int(v) for v in fixed_point(np.array(ratio * 2.0**pre), bits=14))

        def const(value: int) -> relax.Expr:
            return relax.const(np.full(axis_shape, value, np.int32))

        y = relax.op.add(acc, relax.const(bias))
        y = relax.op.clip(y, -bound, bound)
        if pre:
            y = relax.op.right_shift(relax.op.add(y, const(1 << (pre - 1))), const(pre))
        y = relax.op.multiply(y, const(mult))
        y = relax.op.right_shift(relax.op.add(y, const(1 << (shift - 1))), const(shift))
        return bb.emit(relax.op.astype(relax.op.clip(y, 0 if relu else -128, 127), "int8"))

    def conv(
        self, x: relax.Expr, c_in: int, c_out: int, k: int, s: int, groups: int, relu: bool
    ) -> relax.Expr:
        w = self.weights((c_out, c_in // groups, k, k), 0)
        acc = self.bb.emit(relax.op.nn.conv2d(x, relax.const(w), s, k // 2, groups=groups, out_dtype="int32"))
        return self.requant(acc, c_out, c_in // groups * k * k, relu, (1, c_out, 1, 1))


def to_int8_relax(model: Model, weight_bits: int = 8, seed: int = 0) -> tvm.IRModule:
    """The int8 twin: float input quantized on entry, int8 core, float output."""
    bb = relax.BlockBuilder()
    q = _Int8(bb, np.random.default_rng(seed), weight_bits)
    inp = relax.Var("x", relax.TensorType(model.input_shape, "float32"))
    with bb.function("main", [inp]):
        out = _emit_int8_body(bb, q, model, inp)
        bb.emit_func_output(out)
    return bb.get()


def _emit_int8_body(bb: relax.BlockBuilder, q: _Int8, model: Model, inp: relax.Var) -> relax.Expr:
    with bb.dataflow():
        x = bb.emit(
            relax.op.astype(
                relax.op.clip(relax.op.round(relax.op.multiply(inp, relax.const(40.0))), -128, 127), "int8"
            )
        )
        c = model.input_shape[1]
        for layer in model.layers:
            kind = layer[0]
            if kind == "conv":
                _, c_out, k, s, groups, relu = layer
                x, c = q.conv(x, c, c_out, k, s, groups, relu), c_out
            elif kind == "maxpool":
                _, k, s, p = layer
                x = bb.emit(relax.op.nn.max_pool2d(x, k, s, p))
            elif kind == "res":
                _, c_out, s = layer
                y = q.conv(q.conv(x, c, c_out, 3, s, 1, True), c_out, c_out, 3, 1, 1, False)
                short = x if (s == 1 and c == c_out) else q.conv(x, c, c_out, 1, s, 1, False)
                total = relax.op.add(relax.op.astype(y, "int32"), relax.op.astype(short, "int32"))
                x, c = bb.emit(relax.op.astype(relax.op.clip(total, 0, 127), "int8")), c_out
            elif kind == "gap":
                hw = int(x.ty.shape[2]) * int(x.ty.shape[3])
                total = bb.emit(
                    relax.op.astype(relax.op.sum(relax.op.astype(x, "int32"), axis=[2, 3]), "int64")
                )
                mean = relax.op.right_shift(
                    relax.op.multiply(total, relax.const(round(2**16 / hw), "int64")),
                    relax.const(16, "int64"),
                )
                x = bb.emit(relax.op.astype(relax.op.clip(mean, -128, 127), "int8"))
            elif kind == "fc":
                relu = layer[2] if len(layer) > 2 else False
                w = q.weights((c, layer[1]), 1)
                acc = bb.emit(relax.op.matmul(x, relax.const(w), out_dtype="int32"))
                x, c = q.requant(acc, layer[1], c, relu, (1, layer[1])), layer[1]
        out = bb.emit_output(relax.op.multiply(relax.op.astype(x, "float32"), relax.const(0.05)))
    return out
