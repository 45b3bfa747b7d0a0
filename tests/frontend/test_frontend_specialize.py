"""An If on a scalar integer input (silero-vad's sample rate): specialised to the branch the
calibration data takes, and an artifact that refuses any other value."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.frontend.helpers import rate_switch_model
from tests.quantize.conftest import cosine, quantize, run_artifact, run_onnx
from worker.errors import ModelImportError
from worker.frontend import CalibrationSet, import_relax, model_inputs, simplify, specialize
from worker.frontend.guard import guard_pins

SHAPES = {"x": (1, 4), "sr": ()}


def _feeds(rates: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for k, rate in enumerate(rates):
        feeds[f"{k}/x"] = rng.standard_normal(SHAPES["x"]).astype(np.float32)
        feeds[f"{k}/sr"] = np.array(rate, np.int64)
    return feeds


def _calibration(rates: list[int]) -> CalibrationSet:
    return CalibrationSet.from_arrays(_feeds(rates), model_inputs(rate_switch_model()))


def _build(mod):
    import tvm

    ex = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    return lambda x, sr: vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(np.array(sr, np.int64))).numpy()


def test_the_branch_for_other_shapes_does_not_import():
    """The mechanism: TVM's importer converts both branches for the pinned shapes."""
    with pytest.raises(ModelImportError, match="reduction length") as caught:
        import_relax(simplify(rate_switch_model(), SHAPES), SHAPES)
    assert "If on the integer input(s) 'sr'" in caught.value.message


def test_specialised_to_the_calibration_value_imports_and_refuses_others():
    model, pins = specialize(rate_switch_model(), _calibration([16000, 16000, 16000]))
    assert [(p.input, p.value, p.shape) for p in pins] == [("sr", 16000, ())]
    assert [n.op_type for n in model.graph.node] == ["Equal", "MatMul", "Identity"]  # the If is gone
    assert [vi.name for vi in model.graph.input] == ["x", "sr"]  # the artifact still takes sr
    run = _build(guard_pins(import_relax(simplify(model, SHAPES), SHAPES), pins))
    x = np.random.default_rng(1).standard_normal(SHAPES["x"]).astype(np.float32)
    (want,) = run_onnx(rate_switch_model(), {"x": x, "sr": np.array(16000, np.int64)})
    np.testing.assert_allclose(run(x, 16000), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError, match=r"input 'sr' must be 16000.*got 8000"):
        run(x, 8000)


def test_the_other_branch_when_calibrated_there():
    model, pins = specialize(rate_switch_model(), _calibration([8000]))
    assert [(p.input, p.value) for p in pins] == [("sr", 8000)]
    assert "else branch kept" in pins[0].branches[0]
    assert "Reshape" in [n.op_type for n in model.graph.node]


def test_nothing_specialised_when_the_samples_disagree_or_there_are_none():
    original = rate_switch_model()
    for calibration in (_calibration([16000, 8000]), None):
        model, pins = specialize(original, calibration)
        assert pins == []
        assert [n.op_type for n in model.graph.node] == ["Equal", "If"]


def test_a_condition_on_a_float_input_stays():
    """Only integer inputs are pinned: a condition that reads x is left to the importer."""
    model = rate_switch_model()
    model.graph.node[0].input[0] = "x_sum"
    model.graph.node.insert(0, helper.make_node("ReduceSum", ["x"], ["x_sum"], keepdims=0))
    assert specialize(model, _calibration([16000]))[1] == []


def test_the_pipeline_records_the_pin_and_the_artifact_refuses_other_values(tmp_path):
    feeds = _feeds([16000] * 5)
    result = quantize(tmp_path, rate_switch_model(), feeds)
    (pin,) = result.report["provenance"]["specialized_inputs"]
    assert pin["input"] == "sr" and pin["value"] == 16000
    assert "Specialised input &#x27;sr&#x27;" in (tmp_path / "out" / "report.html").read_text()
    x, sr = feeds["0/x"], feeds["0/sr"]
    (want,) = run_onnx(rate_switch_model(), {"x": x, "sr": sr})
    (got,) = run_artifact(tmp_path / "out" / "float_model.so", [x, sr])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    (got,) = run_artifact(result.artifact, [x, sr])
    assert cosine(got, want) > 0.99
    for artifact in (result.artifact, tmp_path / "out" / "float_model.so"):
        with pytest.raises(AssertionError, match="input 'sr' must be 16000"):
            run_artifact(artifact, [x, np.array(8000, np.int64)])


def test_a_one_element_rate_tensor_is_pinned_and_guarded_too():
    model = rate_switch_model()
    model.graph.input[1].type.tensor_type.shape.dim.add().dim_value = 1  # sr: (1,)
    feeds = {"0/x": np.ones(SHAPES["x"], np.float32), "0/sr": np.array([16000], np.int64)}
    special, pins = specialize(model, CalibrationSet.from_arrays(feeds, model_inputs(model)))
    assert [(p.input, p.value, p.shape) for p in pins] == [("sr", 16000, (1,))]
    shapes = {"x": SHAPES["x"], "sr": (1,)}
    run = _build(guard_pins(import_relax(simplify(special, shapes), shapes), pins))
    run(feeds["0/x"], [16000])
    with pytest.raises(AssertionError, match="got \\[8000\\]"):
        run(feeds["0/x"], [8000])
