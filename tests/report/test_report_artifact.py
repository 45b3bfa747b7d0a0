"""The integrality section describes the library that ships: its kernels are the functions model.so
exports (its dynamic symbol table, read with `nm -D`) and the ones its VM calls when it runs (the
VM's instrument), each with the Relax ops it computes; the build runs once per artifact."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import tests.models as models
from tests.quantize.conftest import INTEGRAL, quantize
from worker import build
from worker.kernels.rewrite import KERNEL_NAME
from worker.report.schema import Report

#: the prefix tvm-ffi gives every function a library exports; `_library_bin` is the VM's bytecode
EXPORT_PREFIX = "__tvm_ffi_"
NOT_A_KERNEL = {"_library_bin"}


def exported_functions(library: Path) -> set[str]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("binutils' nm is not installed")
    table = subprocess.run(
        [nm, "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    )
    names = {line.split()[-1] for line in table.stdout.splitlines() if line.strip()}
    return {n.removeprefix(EXPORT_PREFIX) for n in names if n.startswith(EXPORT_PREFIX)} - NOT_A_KERNEL


def called_kernels(library: Path, inputs: list[np.ndarray], exported: set[str]) -> list[str]:
    """The exported functions the library's main calls, in order, seen by the VM's instrument."""
    import tvm

    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    calls: list[str] = []

    def instrument(_func: object, symbol: str, before: bool, *_rest: object) -> int:
        if before and str(symbol) in exported:
            calls.append(str(symbol))
        return 0

    vm.set_instrument(tvm.runtime.convert(instrument))
    vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    return calls


def assert_lists_the_calls(report: Report, artifact: Path, x: np.ndarray) -> None:
    """The kernels listed are the exported functions main calls, in order. The library also keeps
    functions nothing calls, each for a reason: an unfused packed kernel (its global symbol keeps it
    past FuseTIR) fused into a listed kernel named after it, or a reshape (RewriteDataflowReshape
    made it a view)."""
    exported = exported_functions(artifact)
    listed = [op.name for op in report.integrality.ops]
    assert called_kernels(artifact, [x], exported) == listed
    assert set(listed) <= exported
    for name in exported - set(listed):
        fused = KERNEL_NAME.fullmatch(name) and any(n.startswith(f"fused_{name}_") for n in listed)
        assert fused or name.rstrip("0123456789") == "reshape", name


@pytest.fixture(scope="module")
def cnn_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path, np.ndarray]:
    model = models.small_cnn()
    calibration = models.random_calibration(model, 10, 0)
    result = quantize(tmp_path_factory.mktemp("cnn"), model, calibration, calibrate_mode="max", **INTEGRAL)
    x = next(iter(calibration.values()))[:1]
    return Report.model_validate(result.report), result.artifact, x


def test_the_report_lists_exactly_the_kernels_the_library_exports_and_calls(
    cnn_report: tuple[Report, Path, np.ndarray],
) -> None:
    report, artifact, x = cnn_report
    assert_lists_the_calls(report, artifact, x)
    assert report.provenance.pipeline == "tvmq" and report.provenance.pipeline_fallback is None


def test_an_int8_conv_computed_exactly_in_float_is_integral(
    cnn_report: tuple[Report, Path, np.ndarray],
) -> None:
    """The depthwise conv of the CNN is an int8 op the builder computes in float32 (exact up to 1024
    taps): the kernel says so and stays integral, so fully_integral holds for the model."""
    report, _, _ = cnn_report
    exact = [op for op in report.integrality.ops if op.exact_float]
    (conv,) = [op for op in exact if op.relax_op == "nn.conv2d"]
    assert "float32" in conv.inputs and conv.macs > 0
    assert all(op.integral and op.reason is None and op.group == "core" for op in exact)
    assert report.integrality.fully_integral


def test_each_kernel_names_the_relax_ops_it_computes(cnn_report: tuple[Report, Path, np.ndarray]) -> None:
    """Fused kernels are traced through FuseOps/FuseTIR back to the ops of the built module: every
    conv's MACs land on the kernel that computes it, and the conversions are named for what they do."""
    report, _, _ = cnn_report
    ops = report.integrality.ops
    convs = [op for op in ops if "nn.conv2d" in op.relax_ops]
    assert convs and all(op.relax_op == "nn.conv2d" and op.macs > 0 for op in convs)
    assert sum(op.macs for op in ops) == report.integrality.counts.integer_macs > 0
    assert any(len(op.relax_ops) > 1 for op in ops), "no kernel fused several ops"
    assert {op.relax_op for op in ops if op.group == "prefix"} == {"quantize"}
    assert {op.relax_op for op in ops if op.group == "suffix"} == {"dequantize"}
    assert {op.function for op in ops} == {"quantize_inputs", "quantized_main", "dequantize_outputs"}
    assert all(op.integral for op in ops if op.group == "core")
    assert all(op.reason for op in ops if not op.integral)


def test_tvms_fallback_build_is_recorded_and_still_listed_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import kernels

    def broken(mod: object, target: object) -> object:
        raise RuntimeError("a schedule bug\nScheduleError: loop not found")

    monkeypatch.setattr(kernels, "compile_module", broken)
    model = models.small_cnn()
    calibration = models.random_calibration(model, 10, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = quantize(tmp_path, model, calibration, calibrate_mode="max", **INTEGRAL)
    report = Report.model_validate(result.report)
    assert report.provenance.pipeline == "tvm"
    assert report.provenance.pipeline_fallback == "ScheduleError: loop not found"
    assert report.provenance.isa is None  # TVM's own lowering: no packed int8 kernels
    assert not [op.name for op in report.integrality.ops if op.name.startswith("tvmq_")]
    assert_lists_the_calls(report, result.artifact, next(iter(calibration.values()))[:1])


def test_one_build_per_module_and_none_in_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The calibration probe, the artifact and the float baseline: three builds. fully_integral is
    checked on the artifact's own kernels (no second lowering), and verify reuses the calibration
    probe and reads the artifact's tensors instead of building a probe and a per-layer module."""
    built: list[int] = []
    compile_once = build._compile

    def counting(mod: object, target: object) -> object:
        built.append(1)
        return compile_once(mod, target)

    monkeypatch.setattr(build, "_compile", counting)
    model = models.small_cnn()
    result = quantize(
        tmp_path,
        model,
        models.random_calibration(model, 10, 2),
        calibrate_mode="max",
        partition_conversions="fully_integral",
        **INTEGRAL,
    )
    assert len(built) == 3
    report = Report.model_validate(result.report)
    assert report.integrality.fully_integral
    assert report.accuracy.layers and report.accuracy.layer_samples > 0
