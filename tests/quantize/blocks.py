"""Blocks of real networks, with the ONNX patterns PyTorch's exporter (opset 17) writes for them.

- MobileNetV3 inverted residual: 1x1 conv, hard-swish as the `HardSwish` op (nn.Hardswish) and as
  `x * clip(x + 3, 0, 6) / 6` (a hand-written `x * F.relu6(x + 3) / 6`), depthwise 3x3 conv,
  squeeze-excite (GlobalAveragePool, 1x1 convs, ReLU, `HardSigmoid` alpha=1/6), projection, residual.
- YOLO (Ultralytics C2f + neck): convs with SiLU as `Sigmoid` + `Mul`, `Split`, bottleneck with
  residual, `Concat`, nearest `Resize` x2 and a skip `Concat`.
- Transformer encoder layer (pre-norm): `LayerNormalization`, Q/K/V `MatMul` + bias `Add`,
  `Reshape`/`Transpose` into heads, `MatMul` QKᵀ, `Div` by √d, `Softmax`, `MatMul` with V, output
  projection, residual `Add`, MLP with GELU in its erf form (`Div`, `Erf`, `Add`, `Mul`, `Mul`).
  With `decomposed_norm`, each layer norm is written as exporters before opset 17 do:
  `ReduceMean`, `Sub`, `Pow` 2, `ReduceMean`, `Add` eps, `Sqrt`, `Div`, then `Mul` γ and `Add` β.
"""

from __future__ import annotations

import numpy as np
import onnx

from tests.models import _GraphBuilder


def _hard_swish_decomposed(g: _GraphBuilder, x: str) -> str:
    shifted = g.op("Add", [x, g.const(f"three{len(g.nodes)}", np.float32(3.0))])
    clipped = g.op(
        "Clip",
        [
            shifted,
            g.const(f"zero{len(g.nodes)}", np.float32(0.0)),
            g.const(f"six{len(g.nodes)}", np.float32(6.0)),
        ],
    )
    return g.op("Div", [g.op("Mul", [x, clipped]), g.const(f"div{len(g.nodes)}", np.float32(6.0))])


def mobilenet_v3_block(seed: int = 0) -> onnx.ModelProto:
    g = _GraphBuilder(seed)
    c, e = 16, 48
    stem = g.op("HardSwish", [g.conv("x", 3, c, 3)])
    expand = _hard_swish_decomposed(g, g.conv(stem, c, e, 1))
    dw = g.op("HardSwish", [g.conv(expand, e, e, 3, group=e)])
    squeeze = g.op("GlobalAveragePool", [dw])
    fc1 = g.op("Relu", [g.conv(squeeze, e, 12, 1)])
    gate = g.op("HardSigmoid", [g.conv(fc1, 12, e, 1)], alpha=1.0 / 6.0, beta=0.5)
    excited = g.op("Mul", [dw, gate])
    out = g.op("Add", [g.conv(excited, e, c, 1), stem])
    return g.model("mobilenet_v3_block", {"x": (1, 3, 32, 32)}, {"y": out})


def _silu(g: _GraphBuilder, x: str) -> str:
    return g.op("Mul", [x, g.op("Sigmoid", [x])])


def yolo_block(seed: int = 0) -> onnx.ModelProto:
    g = _GraphBuilder(seed)
    stem = _silu(g, g.conv("x", 3, 32, 3, stride=2))
    cv1 = _silu(g, g.conv(stem, 32, 32, 1))
    split = f"split_{len(g.nodes)}"
    parts = [f"{split}_a", f"{split}_b"]
    g.nodes.append(
        onnx.helper.make_node(
            "Split", [cv1, g.const("split_sizes", np.array([16, 16], np.int64))], parts, axis=1, name=split
        )
    )
    m = _silu(g, g.conv(_silu(g, g.conv(parts[1], 16, 16, 3)), 16, 16, 3))
    bottleneck = g.op("Add", [parts[1], m])
    c2f = _silu(g, g.conv(g.op("Concat", [parts[0], parts[1], bottleneck], axis=1), 48, 32, 1))
    down = _silu(g, g.conv(c2f, 32, 32, 3, stride=2))
    up = g.op(
        "Resize",
        [down, "", g.const("scales", np.array([1, 1, 2, 2], np.float32))],
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    neck = _silu(g, g.conv(g.op("Concat", [up, c2f], axis=1), 64, 32, 3))
    return g.model("yolo_block", {"x": (1, 3, 32, 32)}, {"y": g.conv(neck, 32, 16, 1)})


def _linear(g: _GraphBuilder, x: str, cin: int, cout: int) -> str:
    w = g.rng.normal(0.0, np.sqrt(1.0 / cin), (cin, cout)).astype(np.float32)
    b = g.rng.normal(0.0, 0.02, cout).astype(np.float32)
    idx = len(g.weights)
    return g.op("Add", [g.op("MatMul", [x, g.const(f"w{idx}", w)]), g.const(f"b{idx}", b)])


def _layer_norm(g: _GraphBuilder, x: str, d: int, decomposed: bool) -> str:
    idx = len(g.weights)
    gamma = g.const(f"ln{idx}.g", (1.0 + 0.1 * g.rng.standard_normal(d)).astype(np.float32))
    beta = g.const(f"ln{idx}.b", (0.05 * g.rng.standard_normal(d)).astype(np.float32))
    if not decomposed:
        return g.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)
    centred = g.op("Sub", [x, g.op("ReduceMean", [x], axes=[-1], keepdims=1)])
    squared = g.op("Pow", [centred, g.const(f"ln{idx}.two", np.float32(2.0))])
    var = g.op("ReduceMean", [squared], axes=[-1], keepdims=1)
    std = g.op("Sqrt", [g.op("Add", [var, g.const(f"ln{idx}.eps", np.float32(1e-5))])])
    return g.op("Add", [g.op("Mul", [g.op("Div", [centred, std]), gamma]), beta])


def _gelu_erf(g: _GraphBuilder, x: str) -> str:
    n = len(g.nodes)
    scaled = g.op("Div", [x, g.const(f"sqrt2_{n}", np.float32(np.sqrt(2.0)))])
    erf = g.op("Add", [g.op("Erf", [scaled]), g.const(f"one_{n}", np.float32(1.0))])
    return g.op("Mul", [g.op("Mul", [x, erf]), g.const(f"half_{n}", np.float32(0.5))])


def transformer_block(
    seed: int = 0, tokens: int = 16, dim: int = 32, heads: int = 4, decomposed_norm: bool = False
) -> onnx.ModelProto:
    g = _GraphBuilder(seed)
    dh = dim // heads
    heads_shape = g.const("heads_shape", np.array([1, tokens, heads, dh], np.int64))
    flat_shape = g.const("flat_shape", np.array([1, tokens, dim], np.int64))

    def split_heads(t: str, perm: list[int]) -> str:
        return g.op("Transpose", [g.op("Reshape", [t, heads_shape])], perm=perm)

    h = _layer_norm(g, "x", dim, decomposed_norm)
    q = split_heads(_linear(g, h, dim, dim), [0, 2, 1, 3])
    k = split_heads(_linear(g, h, dim, dim), [0, 2, 3, 1])
    v = split_heads(_linear(g, h, dim, dim), [0, 2, 1, 3])
    scores = g.op("Div", [g.op("MatMul", [q, k]), g.const("sqrt_dh", np.float32(np.sqrt(dh)))])
    attn = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    merged = g.op("Reshape", [g.op("Transpose", [attn], perm=[0, 2, 1, 3]), flat_shape])
    x1 = g.op("Add", ["x", _linear(g, merged, dim, dim)])
    mlp = _linear(
        g, _gelu_erf(g, _linear(g, _layer_norm(g, x1, dim, decomposed_norm), dim, 4 * dim)), 4 * dim, dim
    )
    return g.model("transformer_block", {"x": (1, tokens, dim)}, {"y": g.op("Add", [x1, mlp])})
