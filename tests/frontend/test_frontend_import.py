"""simplify + import_relax on every test model, checked against ONNX Runtime after a real build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import tests.models as models
from tests.frontend.helpers import relu_model
from worker.errors import ModelImportError, UnsupportedOpError
from worker.frontend import (
    fixed_input_shapes,
    import_relax,
    input_names,
    load_calibration,
    load_onnx,
    output_names,
    simplify,
)

BUILDERS = ["seed_mul_sigmoid", "seed_gap_mul", "small_cnn", "small_mlp"]
SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Concat", "Slice", "Cast"}


@pytest.fixture
def broken_onnxslim(monkeypatch):
    """Make onnxslim fail so that simplify takes its own fallback."""
    import onnxslim

    def fail(*args, **kwargs):
        raise RuntimeError("simulated onnxslim failure")

    monkeypatch.setattr(onnxslim, "slim", fail)


def _model_file(name: str, tmp_path: Path) -> Path:
    if name in models.EXPORTED:
        return models.exported_model(name)
    path = tmp_path / f"{name}.onnx"
    onnx.save(getattr(models, name)(), path)
    return path


def _run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _front_door(path: Path, tmp_path: Path, dynamic_size: int = 24):
    model = load_onnx(path)
    npz = tmp_path / "calibration.npz"
    np.savez(npz, **models.random_calibration(model, 3, seed=7, dynamic_size=dynamic_size))
    calibration = load_calibration(npz, model)
    shapes = fixed_input_shapes(model, calibration)
    return model, calibration, shapes, simplify(model, shapes)


@pytest.mark.parametrize("name", [*models.EXPORTED, *BUILDERS])
def test_imports_builds_and_matches_onnxruntime(name, tmp_path):
    import tvm

    model, calibration, shapes, simple = _front_door(_model_file(name, tmp_path), tmp_path)
    mod = import_relax(simple, shapes)
    params = mod["main"].params
    assert [tuple(int(d) for d in p.ty.shape) for p in params] == [shapes[n] for n in input_names(model)]

    feeds = dict(zip(calibration.names, calibration.feed(0), strict=True))
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(feeds[n]) for n in input_names(model)))
    got = [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]
    want = _run_ort(model, feeds)
    assert len(got) == len(output_names(model)) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet_small", "digits_cnn", "unet_small"])
def test_shape_subgraphs_fold_away(name, tmp_path):
    model, _, shapes, simple = _front_door(models.exported_model(name), tmp_path)
    assert {n.op_type for n in model.graph.node} & {"Shape"}, "the export should carry a shape subgraph"
    assert not {n.op_type for n in simple.graph.node} & (SHAPE_OPS - {"Concat"})
    for vi in simple.graph.input:
        assert tuple(d.dim_value for d in vi.type.tensor_type.shape.dim) == shapes[vi.name]


@pytest.mark.parametrize("name", ["resnet_small", "unet_small"])
@pytest.mark.usefixtures("broken_onnxslim")
def test_fallback_without_onnxslim_folds_and_stays_exact(name, tmp_path):
    with pytest.warns(UserWarning, match="simulated onnxslim failure.*falling back"):
        model, calibration, shapes, simple = _front_door(models.exported_model(name), tmp_path)
    assert not {n.op_type for n in simple.graph.node} & (SHAPE_OPS - {"Concat"})
    feeds = dict(zip(calibration.names, calibration.feed(0), strict=True))
    np.testing.assert_array_equal(_run_ort(simple, feeds)[0], _run_ort(model, feeds)[0])
    import_relax(simple, shapes)


def test_simplify_keeps_inputs_no_node_reads():
    model = relu_model({"unused": ["N", 4], "x": ["N", 4]})
    model.graph.node[0].input[0] = "x"
    model.graph.node[0].output[0] = "unused_out"
    shapes = fixed_input_shapes(model, None)
    simple = simplify(model, shapes)
    assert input_names(simple) == ["unused", "x"]
    assert [p.name for p in import_relax(simple, shapes)["main"].params] == ["unused", "x"]


def test_unknown_op_is_named_before_the_importer_runs():
    model = models.small_mlp()
    model.graph.node[1].op_type = "Frobnicate"
    model.graph.node[1].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpError) as err:
        import_relax(model, {"x": (1, 64)})
    assert err.value.code == "E_UNSUPPORTED_OP"
    assert err.value.detail["op"] == "Frobnicate" and err.value.detail["ops"] == {"Frobnicate": 1}
    assert err.value.message.startswith("TVM's ONNX importer has no converter for Frobnicate (1 node)")


def test_importer_failure_is_model_import_error():
    """A 4-d convolution is valid ONNX that TVM's importer refuses (it stops at 3 spatial dims)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3, 3, 3])
    w = onnx.numpy_helper.from_array(np.ones((1, 1, 1, 1, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv4d",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3, 3, 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    with pytest.raises(ModelImportError) as err:
        import_relax(model, {"x": (1, 1, 3, 3, 3, 3)})
    assert err.value.code == "E_IMPORT"
    assert "Ndim > 5" in err.value.detail["reason"]


@pytest.mark.usefixtures("broken_onnxslim")
def test_fallback_folds_shape_slices_and_repeated_inputs():
    """Shape with start/end and a node reading one constant twice, as exporters write them."""
    nodes = [
        helper.make_node("Shape", ["x"], ["hw"], start=-2),
        helper.make_node("Shape", ["x"], ["nc"], end=-2),
        helper.make_node("Div", ["hw", "hw"], ["ones"]),
        helper.make_node("Mul", ["hw", "ones"], ["hw2"]),
        helper.make_node("Concat", ["nc", "hw2"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "shapes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    shapes = {"x": (1, 3, 4, 5)}
    with pytest.warns(UserWarning, match="falling back"):
        simple = simplify(model, shapes)
    assert [n.op_type for n in simple.graph.node] == ["Reshape", "Relu"]
    target = next(t for t in simple.graph.initializer if t.name == "target")
    assert onnx.numpy_helper.to_array(target).tolist() == [1, 3, 4, 5]
    x = np.random.default_rng(0).standard_normal(shapes["x"]).astype(np.float32)
    np.testing.assert_array_equal(_run_ort(simple, {"x": x})[0], np.maximum(x, 0))


def test_digits_cnn_through_tvm_keeps_its_recorded_accuracy(tmp_path):
    """Real data through the whole front door: the compiled float model scores what the export did."""
    import tvm

    x, y = models.digits_test_set()
    assert x.shape == (len(y), 1, 8, 8) and x.dtype == np.float32 and len(y) >= 300
    model = load_onnx(models.exported_model("digits_cnn"))
    npz = tmp_path / "digits.npz"
    np.savez(npz, image=x)
    shapes = fixed_input_shapes(model, load_calibration(npz, model))
    mod = import_relax(simplify(model, shapes), shapes)
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    predictions = [int(vm["main"](tvm.runtime.tensor(x[i : i + 1])).numpy().argmax()) for i in range(len(x))]
    accuracy = float(np.mean(np.array(predictions) == y))
    assert accuracy >= 0.95
    assert abs(accuracy - models.digits_float_accuracy()) <= 1 / len(y)


def test_scalar_integer_input_simplifies_imports_and_keeps_its_dtype(tmp_path):
    """silero-vad's `sr`: a rank-0 int64 input. onnxslim takes no shape for it (it used to fail and
    fall back); the imported main takes it as an int64 scalar."""
    import warnings

    import tvm

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["sr"], ["k"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["x", "k"], ["y"]),
        ],
        "scalar_input",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    npz = tmp_path / "c.npz"
    np.savez(npz, **{"0/x": np.ones((1, 4), np.float32), "0/sr": np.array(3, np.int64)})
    calibration = load_calibration(npz, model)
    shapes = fixed_input_shapes(model, calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        simple = simplify(model, shapes)
    mod = import_relax(simple, shapes)
    assert [str(p.ty.dtype) for p in mod["main"].params] == ["float32", "int64"]
    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    got = vm["main"](*(tvm.runtime.tensor(a) for a in calibration.feed(0))).numpy()
    np.testing.assert_array_equal(got, np.full((1, 4), 3.0, np.float32))
