"""LSTM / GRU / RNN rewritten to plain ops: same outputs as ONNX Runtime's own kernels, before and
after the rewrite, and through TVM's importer (the frontend's import path) to a float build."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.converters.builders import Case, feeds, recurrent_model, reference_model
from worker.converters import CONVERTED_OPS, rewrite
from worker.errors import UnsupportedOpError
from worker.frontend import fixed_input_shapes, import_relax, input_names, simplify

ACTS = {"activation_alpha": [0.3], "activation_beta": [0.6]}
CASES = [
    Case("LSTM"),
    Case("LSTM", "reverse"),
    Case("LSTM", "bidirectional"),
    Case("LSTM", layout=1, initial_h=True, initial_c=True),
    Case("LSTM", "bidirectional", layout=1, initial_h=True, initial_c=True, peepholes=True),
    Case("LSTM", peepholes=True, initial_c=True),
    Case("LSTM", "bidirectional", attrs={"clip": 0.5}),
    Case("LSTM", peepholes=True, initial_h=True, initial_c=True, attrs={"input_forget": 1}),
    Case("LSTM", bias=False, initial_h=True),
    Case("LSTM", attrs={"activations": ["Sigmoid", "Tanh", "Tanh"]}),
    Case(
        "LSTM",
        "bidirectional",
        attrs={"activations": ["Relu", "Tanh", "Sigmoid", "Sigmoid", "LeakyRelu", "HardSigmoid"], **ACTS},
    ),
    Case("LSTM", attrs={"activations": ["HardSigmoid", "Elu", "Softsign"], "activation_alpha": [0.25, 0.8]}),
    Case("LSTM", sequence_lens=True),
    Case("LSTM", "bidirectional", outputs=("Y_h",)),
    Case("LSTM", "bidirectional", layout=1, outputs=("Y_c",)),
    Case("LSTM", outputs=("Y",)),
    Case("LSTM", "bidirectional", opset=11),
    Case("LSTM", attrs={"clip": 0.5}, opset=10),  # Clip's bounds still attributes
    Case("LSTM", initial_h=True, initial_c=True, opset=13),
    Case("LSTM", steps=1, initial_h=True, initial_c=True),
    Case("GRU"),
    Case("GRU", attrs={"linear_before_reset": 1}),
    Case("GRU", "bidirectional", initial_h=True),
    Case("GRU", "reverse", initial_h=True, attrs={"linear_before_reset": 1, "clip": 0.3}),
    Case("GRU", "bidirectional", layout=1, attrs={"linear_before_reset": 1}),
    Case("GRU", bias=False, initial_h=True, attrs={"linear_before_reset": 1}),
    Case("GRU", attrs={"activations": ["HardSigmoid", "Softplus"], "activation_alpha": [0.3]}),
    Case("GRU", attrs={"activations": ["Sigmoid", "ThresholdedRelu"], "activation_alpha": [0.1]}),
    Case("GRU", sequence_lens=True, opset=12),
    Case("GRU", outputs=("Y_h",)),
    Case("RNN"),
    Case("RNN", "bidirectional", layout=1, initial_h=True, attrs={"clip": 0.2}),
    Case("RNN", "reverse", bias=False, attrs={"activations": ["Relu"]}),
    Case("RNN", initial_h=True, outputs=("Y",), opset=11),
]
IDS = [case.id() for case in CASES]
RECURRENT = {"LSTM", "GRU", "RNN"}


def _run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def _max_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    assert [g.shape for g in got] == [w.shape for w in want]
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))


def test_converted_ops():
    assert frozenset({"LSTM", "GRU", "RNN"}) == CONVERTED_OPS


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rewrite_matches_onnxruntime(case):
    model = recurrent_model(case)
    rewritten = rewrite(model)
    onnx.checker.check_model(rewritten, full_check=True)  # also: each op in its opset's form
    assert not {n.op_type for n in rewritten.graph.node} & RECURRENT
    assert [o.name for o in rewritten.graph.output] == [o.name for o in model.graph.output]
    read = {i for n in rewritten.graph.node for i in n.input} | {o.name for o in rewritten.graph.output}
    assert all(read.intersection(n.output) for n in rewritten.graph.node), "dead nodes left"
    assert {t.name for t in rewritten.graph.initializer} <= read, "dead weights left"
    inputs = feeds(model)
    assert _max_error(_run(rewritten, inputs), _run(reference_model(case), inputs)) < 1e-5


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tvm_float_build_matches_onnxruntime(case):
    import tvm

    model = recurrent_model(case)
    shapes = fixed_input_shapes(model, None)
    mod = import_relax(simplify(model, shapes), shapes)
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    inputs = feeds(model)
    out = vm["main"](*(tvm.runtime.tensor(inputs[n]) for n in input_names(model)))
    got = [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]
    assert _max_error(got, _run(reference_model(case), inputs)) < 1e-5


def test_node_names_say_where_they_come_from():
    rewritten = rewrite(recurrent_model(Case("LSTM", "bidirectional", steps=3)))
    names = [n.name for n in rewritten.graph.node]
    assert all(name.startswith("lstm_node/") for name in names), names
    assert "lstm_node/x_proj" in names
    assert {"lstm_node/fw/t1/h_proj", "lstm_node/bw/t1/h_proj"} <= set(names)
    # the first step of each direction starts from a zero state: no recurrent product
    assert not {"lstm_node/fw/t0/h_proj", "lstm_node/bw/t2/h_proj"} & set(names)
    projections = [n for n in rewritten.graph.node if n.op_type == "MatMul"]
    weights = {t.name: t for t in rewritten.graph.initializer}
    assert all(len(weights[n.input[1]].dims) == 2 for n in projections)  # dense layers
    assert len(projections) == 1 + 2 * 2


@pytest.mark.parametrize(("opset", "inputs"), [(10, 1), (11, 1), (12, 1), (13, 2), (17, 2)])
def test_split_takes_the_form_of_the_model_opset(opset, inputs):
    rewritten = rewrite(recurrent_model(Case("GRU", "bidirectional", opset=opset)))
    splits = [n for n in rewritten.graph.node if n.op_type == "Split"]
    unsqueezes = [n for n in rewritten.graph.node if n.op_type == "Unsqueeze"]
    assert splits and unsqueezes
    assert {len(n.input) for n in splits + unsqueezes} == {inputs}
    assert all(any(a.name == "split" for a in n.attribute) == (opset < 13) for n in splits)


def test_model_without_recurrent_nodes_is_returned_as_is():
    model = recurrent_model(Case("RNN"))
    model.graph.node[0].op_type = "Identity"
    del model.graph.node[0].input[1:], model.graph.node[0].output[1:], model.graph.node[0].attribute[:]
    assert rewrite(model) is model


def _lstm_cell_in_branch(x_shape: list[int] | None) -> onnx.ModelProto:
    """A PyTorch LSTMCell export inside an If: X = Unsqueeze(x, 0), weights behind Constant/Unsqueeze."""
    rng = np.random.default_rng(3)
    hidden, size = 4, 5

    def constant(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, f"{name}_value"))

    body = [
        constant("axes", np.array([0], np.int64)),
        constant("w2", rng.uniform(-0.5, 0.5, (4 * hidden, size)).astype(np.float32)),
        constant("r2", rng.uniform(-0.5, 0.5, (4 * hidden, hidden)).astype(np.float32)),
        helper.make_node("Unsqueeze", ["x", "axes"], ["seq"]),
        helper.make_node("Unsqueeze", ["w2", "axes"], ["w"]),
        helper.make_node("Unsqueeze", ["r2", "axes"], ["r"]),
        helper.make_node("LSTM", ["seq", "w", "r"], ["", "h", "c"], name="cell", hidden_size=hidden),
        helper.make_node("Concat", ["h", "c"], ["state"], axis=0),
    ]
    then = helper.make_graph(
        body, "then", [], [helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 2, 4])]
    )
    other = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["zeros"], value=numpy_helper.from_array(np.zeros((2, 2, 4), np.float32))
            )
        ],
        "else",
        [],
        [helper.make_tensor_value_info("zeros", TensorProto.FLOAT, [2, 2, 4])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["run"], ["out"], then_branch=then, else_branch=other)],
        "cell_in_if",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
            helper.make_tensor_value_info("run", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 2, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("x_shape", [[2, 5], None], ids=["static", "unknown-rank"])
def test_cell_inside_a_subgraph_with_computed_weights(x_shape):
    model = _lstm_cell_in_branch(x_shape)
    rewritten = rewrite(model)
    if x_shape is not None:  # the checker wants every graph input shaped
        onnx.checker.check_model(rewritten, full_check=True)
    branch = rewritten.graph.node[0].attribute[0].g
    assert "LSTM" not in {n.op_type for n in branch.node}
    produced = {o for n in branch.node for o in n.output}
    assert not produced & {"w", "w2", "r", "r2"}  # the weights' constant chain is folded, then dropped
    initializers = {t.name for t in branch.initializer}
    assert all(n.input[1] in initializers for n in branch.node if n.op_type == "MatMul")
    x = np.random.default_rng(4).standard_normal((2, 5)).astype(np.float32)
    for run in (True, False):
        inputs = {"x": x, "run": np.array(run)}
        assert _max_error(_run(rewritten, inputs), _run(model, inputs)) < 1e-5


def _raises_at(model: onnx.ModelProto, index: int, *fragments: str) -> None:
    """rewrite refuses node `index` of the model with a message holding every fragment."""
    with pytest.raises(UnsupportedOpError) as err:
        rewrite(model)
    assert err.value.code == "E_UNSUPPORTED_OP"
    assert err.value.detail["node"] == model.graph.node[index].name
    assert err.value.detail["op"] == model.graph.node[index].op_type
    for fragment in fragments:
        assert fragment in err.value.message


def _raises(model: onnx.ModelProto, *fragments: str) -> None:
    _raises_at(model, 0, *fragments)


def test_dynamic_sequence_length_is_refused():
    model = recurrent_model(Case("LSTM"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "T"
    _raises(model, "sequence length must be static")


def test_sequence_lens_shorter_than_the_sequence_is_refused():
    model = recurrent_model(Case("GRU", sequence_lens=True))
    lens = next(t for t in model.graph.initializer if t.name == "sequence_lens")
    lens.CopyFrom(numpy_helper.from_array(np.array([5, 3], np.int32), "sequence_lens"))
    _raises(model, "sequence_lens", "[5, 3]")


def test_sequence_lens_fed_at_run_time_is_refused():
    model = recurrent_model(Case("RNN", sequence_lens=True))
    lens = next(t for t in model.graph.initializer if t.name == "sequence_lens")
    model.graph.initializer.remove(lens)
    model.graph.input.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [2]))
    _raises(model, "sequence_lens", "not a constant")


def test_weights_fed_at_run_time_are_refused():
    model = recurrent_model(Case("LSTM"))
    w = next(t for t in model.graph.initializer if t.name == "R")
    model.graph.initializer.remove(w)
    model.graph.input.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, list(w.dims)))
    _raises(model, "input R", "must be a constant")


def test_activation_without_an_op_is_refused():
    model = recurrent_model(Case("RNN", attrs={"activations": ["Affine"], "activation_alpha": [2.0]}))
    _raises(model, "activation 'Affine' is not supported", "Sigmoid, Tanh, Relu")


def test_sequence_length_is_static_only_once_the_frontend_fixed_the_shapes():
    """Why the frontend rewrites at import, after simplify: a sequence as long as a dynamic input dim
    (ddddocr: the image width) has a length only for the shapes compiled for."""
    import tvm

    case = Case("GRU", batch=1, outputs=("Y_h",))
    model = recurrent_model(case)  # then X [1, T, I], T dynamic, made time-major by a Transpose
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, "T", 6]))
    model.graph.node[0].input[0] = "X_time_major"
    model.graph.node.insert(0, helper.make_node("Transpose", ["X"], ["X_time_major"], perm=[1, 0, 2]))
    _raises_at(model, 1, "sequence length must be static")

    shapes = {"X": (1, 7, case.input_size)}
    mod = import_relax(simplify(model, shapes), shapes)
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    x = np.random.default_rng(5).standard_normal(shapes["X"]).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    assert _max_error([got], _run(model, {"X": x})) < 1e-5
