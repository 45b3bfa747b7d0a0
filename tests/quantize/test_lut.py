"""Lookup tables: every activation, in the ONNX form exporters write, becomes one table whose 256
entries are within half an output step of the float function (checked against reference functions
written here, not the quantizer's own numpy), and the compiled gather returns exactly those entries."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

from tests.quantize.conftest import one_tensor_model, prepared_graph
from worker.build import compile_and_load
from worker.qconfig import QConfig
from worker.quantize.graph import Graph, Node
from worker.quantize.ops.lut import build_table, function_name
from worker.quantize.partition import partition
from worker.quantize.realize import Realizer

RUN = partial(compile_and_load, target=tvm.target.Target({"kind": "llvm"}))
CHANNELS = 4
LEVELS = np.arange(-127, 128, dtype=np.float64)  # every int8 level the symmetric grid produces
THRESHOLD = 8.0  # inputs in [-8, 8): scale 1/16
SCALE = THRESHOLD / 128
SLOPES = np.array([0.05, 0.1, 0.25, 0.5], np.float32)

erf = np.vectorize(math.erf)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0)


def _channels(values: np.ndarray) -> np.ndarray:
    return values.reshape(1, CHANNELS, 1)


REFERENCE = {
    "hard_swish": lambda x: x * np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0,
    "hard_sigmoid": lambda x: np.minimum(np.maximum(x / 6.0 + 0.5, 0.0), 1.0),
    "silu": lambda x: x * _sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "exp": np.exp,
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1.0),
    "prelu": lambda x: np.where(x > 0, x, _channels(SLOPES) * x),
    "softplus": _softplus,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.1 * x),
    "divide": lambda x: x / 3.0,
}


def _c(value: float | np.ndarray) -> tuple[str, np.ndarray]:
    return ("", np.asarray(value, np.float32))


#: case -> (ONNX nodes as (op, inputs, attrs); inputs are "x", an earlier node's index, or a
#: constant), the reference, what the quantized graph holds there
CASES: dict[str, tuple[list[tuple], str, str]] = {
    "HardSwish": ([("HardSwish", ["x"], {})], "hard_swish", "hard_swish"),
    "x*clip(x+3,0,6)/6": (
        [
            ("Add", ["x", _c(3.0)], {}),
            ("Clip", [0, _c(0.0), _c(6.0)], {}),
            ("Mul", ["x", 1], {}),
            ("Div", [2, _c(6.0)], {}),
        ],
        "hard_swish",
        "hard_swish",
    ),
    "x*HardSigmoid(x)": (
        [("HardSigmoid", ["x"], {"alpha": 1 / 6, "beta": 0.5}), ("Mul", ["x", 0], {})],
        "hard_swish",
        "hard_swish",
    ),
    "x*Sigmoid(x)": ([("Sigmoid", ["x"], {}), ("Mul", ["x", 0], {})], "silu", "silu"),
    "GELU erf (PyTorch)": (
        [
            ("Div", ["x", _c(math.sqrt(2.0))], {}),
            ("Erf", [0], {}),
            ("Add", [1, _c(1.0)], {}),
            ("Mul", ["x", 2], {}),
            ("Mul", [3, _c(0.5)], {}),
        ],
        "gelu",
        "gelu",
    ),
    "GELU erf (tf2onnx)": (
        [
            ("Mul", ["x", _c(1 / math.sqrt(2.0))], {}),
            ("Erf", [0], {}),
            ("Add", [_c(1.0), 1], {}),
            ("Mul", [_c(0.5), "x"], {}),
            ("Mul", [3, 2], {}),
        ],
        "gelu",
        "gelu",
    ),
    "GELU tanh (PyTorch)": (
        [
            ("Pow", ["x", _c(3.0)], {}),
            ("Mul", [0, _c(0.044715)], {}),
            ("Add", ["x", 1], {}),
            ("Mul", [2, _c(math.sqrt(2.0 / math.pi))], {}),
            ("Tanh", [3], {}),
            ("Add", [4, _c(1.0)], {}),
            ("Mul", ["x", 5], {}),
            ("Mul", [6, _c(0.5)], {}),
        ],
        "gelu_tanh",
        "gelu_tanh",
    ),
    "Exp": ([("Exp", ["x"], {})], "exp", "exp"),
    "Elu": ([("Elu", ["x"], {"alpha": 1.0})], "elu", "elu"),
    "PRelu": ([("PRelu", ["x", _c(SLOPES.reshape(CHANNELS, 1))], {})], "prelu", "nn.prelu"),
    "Softplus": ([("Softplus", ["x"], {})], "softplus", "softplus"),
    "Mish": ([("Mish", ["x"], {})], "mish", "mish"),
    "x*tanh(Softplus(x))": (
        [("Softplus", ["x"], {}), ("Tanh", [0], {}), ("Mul", ["x", 1], {})],
        "mish",
        "mish",
    ),
    "Sigmoid": ([("Sigmoid", ["x"], {})], "sigmoid", "sigmoid"),
    "Tanh": ([("Tanh", ["x"], {})], "tanh", "tanh"),
    "LeakyRelu": ([("LeakyRelu", ["x"], {"alpha": 0.1})], "leaky_relu", "nn.leakyrelu"),
}


def _model(steps: list[tuple], width: int = 8) -> onnx.ModelProto:
    nodes, inits = [], []
    for i, (op, inputs, attrs) in enumerate(steps):
        names = []
        for j, a in enumerate(inputs):
            if isinstance(a, tuple):
                inits.append(numpy_helper.from_array(a[1], f"c{i}_{j}"))
                names.append(f"c{i}_{j}")
            else:
                names.append(a if a == "x" else f"t{a}")
        out = "y" if i == len(steps) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, names, [out], **attrs))
    return one_tensor_model(nodes, inits, (1, CHANNELS, width), 18)


def _table_node(graph: Graph) -> Node:
    (node,) = [n for n in graph.nodes if n.op is not None]  # the whole pattern is one op
    return node


@pytest.mark.parametrize("case", list(CASES))
def test_the_pattern_is_one_table_within_half_a_step(case: str) -> None:
    steps, reference, function = CASES[case]
    node = _table_node(prepared_graph(_model(steps)))
    assert function_name(node) == function
    table = build_table(node, SCALE, 8)
    expected = np.broadcast_to(
        REFERENCE[reference](_channels(np.ones(CHANNELS)) * LEVELS * SCALE), (1, CHANNELS, 255)
    )
    got = table.entries.reshape(-1, 256)[:, 1:] * table.output_scale  # levels -127 .. 127
    error = np.abs(got - expected.reshape(-1, 255)[: got.shape[0]])
    assert error.max() <= table.output_scale / 2 + 1e-6
    assert table.max_abs_error == pytest.approx(error.max(), abs=1e-6)


def test_division_by_a_constant_changes_the_scale_only() -> None:
    """x / 3 on int8 levels q at scale s is q at scale s / 3: no op is emitted, the result is exact."""
    graph = prepared_graph(_model([("Div", ["x", _c(3.0)], {})], width=255))
    node = _table_node(graph)
    assert node.op == "divide"
    realizer = Realizer(graph, QConfig(), quantized={node}, thresholds={graph.params[0]: THRESHOLD})
    mod = realizer.build()
    assert "divide" not in mod.script()
    x = np.tile(LEVELS * SCALE, (1, CHANNELS, 1)).astype(np.float32)
    np.testing.assert_allclose(RUN(mod)["main"](tvm.runtime.tensor(x)).numpy(), x / 3.0, rtol=1e-6)


def test_lut_activations_false_keeps_tables_float() -> None:
    graph = prepared_graph(_model(CASES["x*Sigmoid(x)"][0]))
    node = _table_node(graph)
    assert partition(graph, QConfig(lut_activations=False)).reasons[node] == (
        "excluded by qconfig (lut_activations: false)"
    )


def test_hard_sigmoid_alone_stays_integer_arithmetic() -> None:
    """clip(x / 6 + 0.5, 0, 1) is exact in integers: no table, three integer ops."""
    graph = prepared_graph(_model([("HardSigmoid", ["x"], {"alpha": 1 / 6, "beta": 0.5})]))
    assert [n.op for n in graph.nodes if n.op] == ["multiply", "add", "clip"]


def test_compiled_tables_return_the_table_for_every_input_level() -> None:
    """Every case in one module (each on its own input, so that no two share a subexpression):
    inputs quantized at 1/16, each pattern's table gathered, dequantized; the output is the float
    function within half an output step for all 255 levels."""
    names = list(CASES)
    shape = (1, CHANNELS, 255)
    nodes, inits, inputs, outputs = [], [], [], []
    for k, name in enumerate(names):
        model = _model(CASES[name][0], width=255)
        rename = {"x": f"x{k}", "y": f"y{k}"}
        for n in model.graph.node:
            n.input[:] = [rename.get(i, f"{k}/{i}") for i in n.input]
            n.output[:] = [rename.get(o, f"{k}/{o}") for o in n.output]
            nodes.append(n)
        for init in model.graph.initializer:
            init.name = f"{k}/{init.name}"
            inits.append(init)
        inputs.append(helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, shape))
        outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, shape))
    proto = helper.make_graph(nodes, "all", inputs, outputs, inits)
    graph = prepared_graph(helper.make_model(proto, opset_imports=[helper.make_opsetid("", 18)]))
    tables = [n for n in graph.nodes if n.op is not None]
    assert len(tables) == len(names)
    # outputs calibrated beyond any value: each table takes its own range
    thresholds = {p: THRESHOLD for p in graph.params} | {n.var: 1e9 for n in tables}
    realizer = Realizer(graph, QConfig(), quantized=set(tables), thresholds=thresholds)
    vm = RUN(realizer.build())
    x = np.tile(LEVELS * SCALE, (1, CHANNELS, 1)).astype(np.float32)
    got = [o.numpy() for o in vm["main"](*[tvm.runtime.tensor(x) for _ in names])]
    assert len(realizer.tables) == len(names)
    for name, node, out in zip(names, tables, got, strict=True):
        expected = REFERENCE[CASES[name][1]](x.astype(np.float64))
        assert np.abs(out - expected).max() <= realizer.tables[node].output_scale / 2 + 1e-5, name


def test_a_calibrated_output_below_the_table_range_sets_the_scale() -> None:
    """A detection head's sigmoid on negative logits only reaches sigmoid(x) < 0.01: its output is
    calibrated there, not at the table's range (about 1), where every output would round to 0."""
    node = _table_node(prepared_graph(_model(CASES["Sigmoid"][0])))
    own = build_table(node, SCALE, 8)
    calibrated = build_table(node, SCALE, 8, output_threshold=0.01)
    assert own.output_scale == pytest.approx(_sigmoid(127 * SCALE) / 127)
    assert calibrated.output_scale == pytest.approx(0.01 / 128)
    negative = np.arange(1, 128 - 96)  # levels -127 .. -97: sigmoid < 0.003, half an own step
    assert np.all(calibrated.entries[0, negative] > 0) and np.all(own.entries[0, negative] == 0)
    assert own.clipped_levels == 0
    # the levels above the calibrated range clip; the error is the rounding of the others
    clipped = np.abs(_sigmoid(LEVELS * SCALE)) > (127 + 0.5) * calibrated.output_scale
    assert calibrated.clipped_levels == int(np.count_nonzero(clipped)) > 0
    on_grid = calibrated.entries[0, 1:][~clipped] * calibrated.output_scale
    error = np.abs(on_grid - _sigmoid(LEVELS * SCALE)[~clipped])
    assert calibrated.max_abs_error == pytest.approx(error.max(), abs=1e-9)
    assert calibrated.max_abs_error <= calibrated.output_scale / 2 + 1e-9
