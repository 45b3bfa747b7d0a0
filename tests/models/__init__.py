"""Test models shared by every test: real PyTorch exports on disk and hand-built ONNX graphs.

The exports in data/ come from scripts/make_test_models.py (torch is not needed to use them). The
builders below make small graphs with onnx.helper: seeded He-initialised weights, so activations
keep a sensible scale through the layers and quantization tests see realistic ranges.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from worker.frontend import input_dims

DATA = Path(__file__).resolve().parent / "data"

#: The exported models: name → what it exercises.
EXPORTED = {
    "resnet_small": "pre-activation ResNet: BatchNormalization, residual Add, Shape→Gather→Concat→Reshape",
    "mobilenet_small": "depthwise-separable CNN with ReLU6 (Clip), GlobalAveragePool, Flatten, Gemm",
    "unet_small": "UNet/YOLO neck: nearest Resize (one sized by Shape→Slice→Concat) + Concat skips, "
    "dynamic batch, height and width",
    "mlp_small": "three Gemm layers with ReLU",
    "digits_cnn": "CNN trained on scikit-learn digits (8×8), Shape→Gather→Concat→Reshape flatten",
}

OPSET = 17


def exported_model(name: str) -> Path:
    """Path of one committed export (a key of EXPORTED)."""
    if name not in EXPORTED:
        raise KeyError(f"no exported test model {name!r}; have {sorted(EXPORTED)}")
    return DATA / f"{name}.onnx"


def digits_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The digits CNN's held-out split: x (N, 1, 8, 8) float32 in [0, 1], y (N,) int64 labels."""
    with np.load(DATA / "digits_test.npz", allow_pickle=False) as npz:
        return npz["x"], npz["y"]


def digits_float_accuracy() -> float:
    """Top-1 accuracy of the float digits CNN on digits_test_set(), as measured when it was made."""
    return float(json.loads((DATA / "digits_cnn.json").read_text())["float_accuracy"])


def random_calibration(
    model: onnx.ModelProto, n: int, seed: int, dynamic_size: int = 32
) -> dict[str, np.ndarray]:
    """n standard-normal samples per input (for np.savez); dynamic non-batch dims get dynamic_size."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(
            (n, *(dynamic_size if d is None else d for d in dims[1:])), dtype=np.float32
        )
        for name, dims in input_dims(model).items()
    }


class _GraphBuilder:
    """Accumulates nodes and seeded initializers; one place for naming and weight init."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.weights.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        out = f"{op_type.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, group: int = 1, stride: int = 1) -> str:
        fan_in = cin // group * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k)).astype(np.float32)
        b = self.rng.normal(0.0, 0.05, cout).astype(np.float32)
        idx = len(self.weights)
        return self.op(
            "Conv",
            [x, self.const(f"conv{idx}.w", w), self.const(f"conv{idx}.b", b)],
            kernel_shape=[k, k],
            pads=[k // 2] * 4,
            strides=[stride, stride],
            group=group,
        )

    def gemm(self, x: str, cin: int, cout: int) -> str:
        w = self.rng.normal(0.0, np.sqrt(2.0 / cin), (cout, cin)).astype(np.float32)
        b = self.rng.normal(0.0, 0.05, cout).astype(np.float32)
        idx = len(self.weights)
        return self.op("Gemm", [x, self.const(f"fc{idx}.w", w), self.const(f"fc{idx}.b", b)], transB=1)

    def model(
        self,
        name: str,
        inputs: dict[str, tuple[int | str, ...]],
        outputs: dict[str, str],
        types: dict[str, int] | None = None,
    ) -> onnx.ModelProto:
        """Finish: `outputs` maps the graph output names to the values that become them; inputs are
        float unless `types` gives their ONNX element type."""
        renames = {value: out_name for out_name, value in outputs.items()}
        for node in self.nodes:
            node.output[:] = [renames.get(o, o) for o in node.output]
        graph = helper.make_graph(
            self.nodes,
            name,
            [
                helper.make_tensor_value_info(n, (types or {}).get(n, TensorProto.FLOAT), s)
                for n, s in inputs.items()
            ],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            self.weights,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
        return model


SEED_SHAPE = (1, 16, 64, 64)


def seed_mul_sigmoid(seed: int = 0) -> onnx.ModelProto:
    """conv 3×3 → relu, multiplied by sigmoid of a second input: a multiply with a non-constant rhs."""
    g = _GraphBuilder(seed)
    act = g.op("Relu", [g.conv("x", 16, 16, 3)])
    gate = g.op("Sigmoid", ["gate"])
    return g.model("seed_mul_sigmoid", {"x": SEED_SHAPE, "gate": SEED_SHAPE}, {"y": g.op("Mul", [act, gate])})


def seed_gap_mul(seed: int = 0) -> onnx.ModelProto:
    """conv 3×3 → relu → act * GlobalAveragePool(act): a broadcast multiply of two activations."""
    g = _GraphBuilder(seed)
    act = g.op("Relu", [g.conv("x", 16, 16, 3)])
    return g.model(
        "seed_gap_mul", {"x": SEED_SHAPE}, {"y": g.op("Mul", [act, g.op("GlobalAveragePool", [act])])}
    )


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """Stem conv, depthwise + pointwise convs in a residual Add, two Concat branches, GAP, Flatten, Gemm."""
    g = _GraphBuilder(seed)
    stem = g.op("Relu", [g.conv("x", 3, 16, 3)])
    dw = g.op("Relu", [g.conv(stem, 16, 16, 3, group=16)])
    res = g.op("Relu", [g.op("Add", [g.conv(dw, 16, 16, 1), stem])])
    left = g.op("Relu", [g.conv(res, 16, 8, 3, stride=2)])
    right = g.op("Relu", [g.conv(res, 16, 8, 1, stride=2)])
    cat = g.op("Concat", [left, right], axis=1)
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [cat])], axis=1)
    return g.model("small_cnn", {"x": (1, 3, 32, 32)}, {"logits": g.gemm(flat, 16, 10)})


def small_mlp(seed: int = 0) -> onnx.ModelProto:
    """Three Gemm layers with ReLU: the dense path on its own."""
    g = _GraphBuilder(seed)
    h = g.op("Relu", [g.gemm("x", 64, 32)])
    h = g.op("Relu", [g.gemm(h, 32, 32)])
    return g.model("small_mlp", {"x": (1, 64)}, {"logits": g.gemm(h, 32, 10)})


def pool_chain(seed: int = 0) -> onnx.ModelProto:
    """conv → AveragePool → conv, the pool also feeding an Add and a ReduceMean: integer average
    pools followed by int32 arithmetic and by requantization (tinyocr's recognizer)."""
    g = _GraphBuilder(seed)
    act = g.op("Relu", [g.conv("x", 8, 8, 3)])
    pooled = g.op("AveragePool", [act], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    summed = g.op("Add", [g.conv(pooled, 8, 8, 1), pooled])
    mean = g.op("ReduceMean", [summed], axes=[2, 3], keepdims=1)
    return g.model("pool_chain", {"x": (1, 8, 16, 16)}, {"y": g.op("Add", [g.conv(summed, 8, 8, 3), mean])})


def importer_primfuncs(seed: int = 0) -> onnx.ModelProto:
    """A reflect Pad and an even-kernel Conv with auto_pad=SAME_UPPER: TVM's ONNX importer emits
    each as a TIR PrimFunc of its own (`mirror_pad`, `pad`) called from main."""
    g = _GraphBuilder(seed)
    pads = g.const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    padded = g.op("Pad", ["x", pads], mode="reflect")
    w = g.rng.normal(0.0, np.sqrt(2.0 / (8 * 4)), (8, 8, 2, 2)).astype(np.float32)
    same = g.op("Conv", [padded, g.const("same.w", w)], kernel_shape=[2, 2], auto_pad="SAME_UPPER")
    act = g.op("Relu", [same])
    return g.model("importer_primfuncs", {"x": (1, 8, 16, 16)}, {"y": g.conv(act, 8, 8, 3)})


def conv_layer_norm_conv(seed: int = 0, offset: float = 10.0) -> onnx.ModelProto:
    """conv → a layer norm over channels decomposed as exporters write it (magika's: mean, E[x²],
    var = E[x²] − E[x]², 1/sqrt(var + eps), (x − mean) · rstd · gamma + beta) → conv. The first
    conv's bias is shifted by `offset`, so mean² and E[x²] are nearly equal, as in real features."""
    g = _GraphBuilder(seed)
    x = g.op("Add", [g.conv("x", 8, 16, 3), g.const("offset", np.full((1, 16, 1, 1), offset, np.float32))])
    mean = g.op("ReduceMean", [x], axes=[1], keepdims=1)
    mean_sq = g.op("ReduceMean", [g.op("Mul", [x, x])], axes=[1], keepdims=1)
    var = g.op("Sub", [mean_sq, g.op("Mul", [mean, mean])])
    eps = g.const("eps", np.array(1e-5, np.float32))
    rstd = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [var, eps])])])
    normed = g.op("Mul", [g.op("Sub", [x, mean]), rstd])
    gamma = g.const("gamma", g.rng.uniform(0.5, 1.5, (1, 16, 1, 1)).astype(np.float32))
    beta = g.const("beta", g.rng.normal(0.0, 0.1, (1, 16, 1, 1)).astype(np.float32))
    affine = g.op("Add", [g.op("Mul", [normed, gamma]), beta])
    return g.model(
        "conv_layer_norm_conv", {"x": (1, 8, 16, 16)}, {"y": g.conv(g.op("Relu", [affine]), 16, 8, 3)}
    )


def token_embedding(seed: int = 0) -> onnx.ModelProto:
    """int32 token ids (magika's byte input): ids × 2 (an integer multiply, which has an int8 rule)
    → Gather from an embedding → MatMul → Relu → MatMul."""
    g = _GraphBuilder(seed)
    doubled = g.op("Mul", ["ids", g.const("two", np.array(2, np.int32))])
    table = g.const("embedding", g.rng.normal(0.0, 1.0, (32, 8)).astype(np.float32))
    embedded = g.op("Gather", [table, doubled], axis=0)
    w1 = g.const("w1", g.rng.normal(0.0, 0.5, (8, 8)).astype(np.float32))
    w2 = g.const("w2", g.rng.normal(0.0, 0.5, (8, 4)).astype(np.float32))
    hidden = g.op("Relu", [g.op("MatMul", [embedded, w1])])
    return g.model(
        "token_embedding", {"ids": ("N", 16)}, {"y": g.op("MatMul", [hidden, w2])}, {"ids": TensorProto.INT32}
    )


def scalar_and_state(seed: int = 0) -> onnx.ModelProto:
    """silero-vad's interface without its LSTM: audio x (N, 64), a state (2, N, 16) batched on axis 1
    and a scalar int64 sample rate; y = relu(x·W + sum(state)·V) · sr / 16000."""
    g = _GraphBuilder(seed)
    w = g.const("w", g.rng.normal(0.0, 0.2, (64, 16)).astype(np.float32))
    v = g.const("v", g.rng.normal(0.0, 0.3, (16, 16)).astype(np.float32))
    axis0 = g.const("axis0", np.array([0], np.int64))
    state = g.op("ReduceSum", ["state", axis0], keepdims=0)
    hidden = g.op("Relu", [g.op("Add", [g.op("MatMul", ["x", w]), g.op("MatMul", [state, v])])])
    rate = g.op(
        "Div", [g.op("Cast", ["sr"], to=TensorProto.FLOAT), g.const("base", np.array(16000, np.float32))]
    )
    return g.model(
        "scalar_and_state",
        {"x": ("N", 64), "state": (2, "N", 16), "sr": ()},
        {"y": g.op("Mul", [hidden, rate])},
        {"sr": TensorProto.INT64},
    )
