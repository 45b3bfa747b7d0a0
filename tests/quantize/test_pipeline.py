"""End to end through run_pipeline: the seed's graphs, small CNN/MLP, real exports, the digits CNN."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tests.models as models
from tests.quantize.conftest import ACCURATE, INTEGRAL, cosine, quantize, run_artifact, run_onnx
from worker.errors import NotFullyIntegralError


def _check_against_onnx(result, model, calibration, bar: float) -> float:
    feeds = {k: v[:1] for k, v in calibration.items()}
    ref = run_onnx(model, feeds)
    got = run_artifact(result.artifact, list(feeds.values()))
    assert [r.shape for r in ref] == [g.shape for g in got]
    worst = min(cosine(r, g) for r, g in zip(ref, got, strict=True))
    assert worst >= bar, f"cosine vs ONNX Runtime float {worst:.4f} < {bar}"
    return worst


@pytest.mark.parametrize("builder", ["seed_mul_sigmoid", "seed_gap_mul"])
def test_seed_examples_quantize_build_and_run(tmp_path, builder):
    model = getattr(models, builder)()
    calibration = models.random_calibration(model, 10, 0)
    result = quantize(tmp_path, model, calibration, calibrate_mode="max", **INTEGRAL)
    assert result.artifact.is_file() and result.report_path.is_file() and result.relax_script.is_file()
    _check_against_onnx(result, model, calibration, 0.99)
    assert result.report["integrality"]["fully_integral"] is True
    ops = {
        op["name"].rstrip("0123456789") for op in result.report["integrality"]["ops"] if op["group"] == "core"
    }
    if builder == "seed_mul_sigmoid":
        assert "take" in ops, "sigmoid should be an int8 lookup table inside the core"


@pytest.mark.parametrize("builder", ["small_cnn", "small_mlp"])
@pytest.mark.parametrize("mode", ["max", "kl_divergence"])
def test_small_models_accurate_and_fully_integral(tmp_path, builder, mode):
    model = getattr(models, builder)()
    calibration = models.random_calibration(model, 24, 1)
    result = quantize(
        tmp_path, model, calibration, calibrate_mode=mode, partition_conversions="fully_integral", **ACCURATE
    )
    _check_against_onnx(result, model, calibration, 0.99)
    assert result.report["summary"]["fully_integral"] is True
    assert result.report["summary"]["cosine"] >= 0.99


def _conv_sin_conv() -> onnx.ModelProto:
    """conv -> Sin (no int8 rule; softmax has an integer one now) -> conv: a float-only op between
    two integer layers."""
    rng = np.random.default_rng(5)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sin", ["c1"], ["s"]),
        helper.make_node("Conv", ["s", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_sin_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [w1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fully_integral_names_the_float_op(tmp_path):
    model = _conv_sin_conv()
    calibration = models.random_calibration(model, 8, 2)
    with pytest.raises(NotFullyIntegralError) as err:
        quantize(
            tmp_path,
            model,
            calibration,
            calibrate_mode="max",
            partition_conversions="fully_integral",
            **INTEGRAL,
        )
    assert err.value.code == "E_NOT_FULLY_INTEGRAL"
    assert any("_sin" in op for op in err.value.detail["ops"]), err.value.message  # the kernel with it
    assert "float32" in err.value.message and "no rule" in err.value.message


def test_excluded_op_in_core_is_reported_not_integral(tmp_path):
    """Without fully_integral the job succeeds and the report names the excluded op and why."""
    model = models.small_cnn()
    calibration = models.random_calibration(model, 8, 2)
    result = quantize(tmp_path, model, calibration, calibrate_mode="max", exclude_ops=["concat"], **INTEGRAL)
    integrality = result.report["integrality"]
    assert integrality["fully_integral"] is False
    floats = {op["name"]: op for op in integrality["ops"] if op["group"] == "core" and not op["integral"]}
    assert any(name.startswith("concatenate") for name in floats), floats
    assert {op["reason"] for name, op in floats.items() if name.startswith("concatenate")} == {
        "excluded by qconfig"
    }


def test_enabled_conversions_split_and_run(tmp_path):
    model = models.small_cnn()
    calibration = models.random_calibration(model, 8, 3)
    result = quantize(
        tmp_path, model, calibration, calibrate_mode="max", partition_conversions="enabled", **INTEGRAL
    )
    _check_against_onnx(result, model, calibration, 0.99)
    import tvm

    lib = tvm.runtime.load_module(str(result.artifact))
    vm = tvm.relax.VirtualMachine(lib, tvm.cpu())
    for name in ("quantize_inputs", "quantized_main", "dequantize_outputs"):
        assert vm[name] is not None


@pytest.mark.parametrize("name", ["resnet_small", "mobilenet_small", "unet_small", "mlp_small"])
def test_real_exports_with_dynamic_axes(tmp_path, name):
    path = models.exported_model(name)
    import onnx

    model = onnx.load(str(path))
    calibration = models.random_calibration(model, 10, 4)
    result = quantize(tmp_path, path, calibration, calibrate_mode="kl_divergence", **ACCURATE)
    _check_against_onnx(result, path, calibration, 0.98)


def test_digits_cnn_keeps_accuracy(tmp_path):
    x, y = models.digits_test_set()
    path = models.exported_model("digits_cnn")
    result = quantize(tmp_path, path, {_inputs(path)[0]: x[:100]}, calibrate_mode="kl_divergence", **ACCURATE)
    import tvm

    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(result.artifact)), tvm.cpu())
    preds = np.array(
        [int(np.argmax(vm["main"](tvm.runtime.tensor(x[i : i + 1])).numpy())) for i in range(len(x))]
    )
    accuracy = float(np.mean(preds == y))
    assert accuracy >= models.digits_float_accuracy() - 0.01, (accuracy, models.digits_float_accuracy())


def _inputs(path) -> list[str]:
    from worker.frontend import input_names, load_onnx

    return input_names(load_onnx(path))


def test_int8_activations_between_ops(tmp_path):
    """nbit_activation=8 requantizes every add/concat output to int8 at its calibrated scale."""
    model = models.small_cnn()
    calibration = models.random_calibration(model, 16, 6)
    result = quantize(
        tmp_path,
        model,
        calibration,
        calibrate_mode="max",
        nbit_activation=8,
        dtype_activation="int8",
        **ACCURATE,
    )
    _check_against_onnx(result, model, calibration, 0.98)
    kinds = {t["kind"] for t in result.report["calibration"]["tensors"]}
    assert "activation" in kinds
