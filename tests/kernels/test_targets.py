"""Targets that name the CPU: "native" is this worker's CPU, a CPU name picks its ISA, and the report
says which ISA the artifact's int8 kernels use and what "native" would give."""

from __future__ import annotations

import json

import pytest
import tvm
from tvm.target import codegen

import tests.models as models
from tests.quantize.conftest import INTEGRAL, quantize
from worker.build import faster_native_isa, int8_isa, make_target, native_target, resolve_target
from worker.errors import QConfigError
from worker.kernels import host, isa
from worker.qconfig import QConfig
from worker.report.html import render_report_html
from worker.report.schema import Report

NATIVE_FORMS = ["native", "llvm -mcpu=native", {"kind": "llvm", "mcpu": "native"}]


@pytest.mark.parametrize("form", NATIVE_FORMS, ids=str)
def test_native_is_the_host_cpu_by_name(form: str | dict) -> None:
    resolved = resolve_target(QConfig(target=form).target_dict())
    assert resolved["kind"] == "llvm"
    assert resolved["mcpu"] == codegen.llvm_get_system_cpu() != "native"
    assert make_target(resolved).mcpu == resolved["mcpu"]


def test_native_switches_off_what_the_host_hides() -> None:
    """A VM reporting an Ice Lake model without AVX-512 flags gets an AVX2 build, not SIGILL."""
    avx2_only = frozenset({"avx", "avx2", "fma", "sse4_2"})
    spec = native_target({"kind": "llvm", "mattr": ["+popcnt"]}, cpu="icelake-server", flags=avx2_only)
    assert spec["mcpu"] == "icelake-server"
    assert {"-avx512f", "-avx512vnni", "-avx512bw", "-avx512vl"} <= set(spec["mattr"])
    assert spec["mattr"][-1] == "+popcnt"  # the user's features come last and win
    assert isa.select(tvm.target.Target(spec)) is isa.AVX2
    with_vnni = avx2_only | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}
    full = native_target({"kind": "llvm"}, cpu="icelake-server", flags=with_vnni)
    assert "mattr" not in full and isa.select(tvm.target.Target(full)) is isa.AVX512_VNNI
    assert host.unreported(["avx512f"], None) == []  # no /proc/cpuinfo: trust the CPU name


def test_unknown_cpu_is_a_qconfig_error() -> None:
    with pytest.raises(QConfigError) as err:
        make_target(resolve_target({"kind": "llvm", "mcpu": "icelake-serv"}))
    assert err.value.code == "E_QCONFIG" and err.value.detail["field"] == "target"


def test_report_fields_name_the_isa() -> None:
    generic = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"})
    native = isa.select(tvm.target.Target(native_target({"kind": "llvm"})))
    assert int8_isa(generic) is None
    assert int8_isa(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})) == "avx2"
    assert int8_isa(tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids"})) == "avx512vnni"
    assert faster_native_isa(generic) == (native.name if native else None)
    assert faster_native_isa(tvm.target.Target(native_target({"kind": "llvm"}))) is None
    assert faster_native_isa(tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids"})) is None


def test_native_artifact_reports_its_isa(tmp_path) -> None:
    model = models.small_cnn()
    result = quantize(tmp_path, model, models.random_calibration(model, 6, 0), target="native", **INTEGRAL)
    report = Report.model_validate(result.report)
    expected = isa.select(tvm.target.Target(native_target({"kind": "llvm"})))
    assert report.provenance.target["mcpu"] == host.system_cpu()
    assert report.provenance.isa == (expected.name if expected else None)
    assert report.provenance.native_isa is None
    assert report.provenance.qconfig["target"] == "native"
    page = render_report_html(json.loads(json.dumps(result.report)))
    assert "Int8 kernels" in page and (expected is None or expected.name in page)
