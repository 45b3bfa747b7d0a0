"""The report model: JSON round trip, strictness, and the invariants that keep it self-consistent."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from worker.report.schema import SCHEMA_VERSION, Integrality, OpRecord, Report, report_schema


def test_round_trip_through_json(sample_report: dict[str, Any]) -> None:
    text = json.dumps(sample_report)
    again = Report.model_validate_json(text)
    assert again.model_dump(mode="json") == sample_report
    assert again.schema_version == SCHEMA_VERSION == "1.2"


@pytest.mark.parametrize(
    "path",
    [(), ("summary",), ("integrality", "ops", 0), ("accuracy", "outputs", 0), ("performance", "float")],
)
def test_unknown_keys_are_rejected(sample_report: dict[str, Any], path: tuple[Any, ...]) -> None:
    bad = copy.deepcopy(sample_report)
    node = bad
    for key in path:
        node = node[key]
    node["sqnr_dB"] = 1.0
    with pytest.raises(ValidationError, match="sqnr_dB"):
        Report.model_validate(bad)


def test_infinite_sqnr_is_rejected(sample_report: dict[str, Any]) -> None:
    bad = copy.deepcopy(sample_report)
    bad["accuracy"]["layers"][0]["sqnr_db"] = float("inf")
    with pytest.raises(ValidationError, match="finite"):
        Report.model_validate(bad)


def test_counts_must_match_ops(sample_report: dict[str, Any]) -> None:
    bad = copy.deepcopy(sample_report)
    bad["integrality"]["counts"]["float_ops"] += 1
    with pytest.raises(ValidationError, match="counts"):
        Report.model_validate(bad)


def test_fully_integral_cannot_hide_a_float_core_op(sample_report: dict[str, Any]) -> None:
    bad = copy.deepcopy(sample_report)
    assert bad["integrality"]["float_in_core"] == ["fused_dequantize_sigmoid_quantize"]
    bad["integrality"]["float_in_core"] = []
    bad["integrality"]["fully_integral"] = True
    bad["summary"]["fully_integral"] = True
    with pytest.raises(ValidationError, match="float_in_core"):
        Report.model_validate(bad)


def test_integral_op_has_no_float_reason(sample_report: dict[str, Any]) -> None:
    bad = copy.deepcopy(sample_report)
    core_int = next(op for op in bad["integrality"]["ops"] if op["integral"])
    core_int["reason"] = "no rule"
    with pytest.raises(ValidationError, match="integral but has a float reason"):
        Report.model_validate(bad)


def test_float_op_must_say_why(sample_report: dict[str, Any]) -> None:
    bad = copy.deepcopy(sample_report)
    prefix = next(op for op in bad["integrality"]["ops"] if op["group"] == "prefix")
    prefix["reason"] = None
    with pytest.raises(ValidationError, match="float but says not why"):
        Report.model_validate(bad)


def test_speedup_is_against_the_faster_float_engine(sample_report: dict[str, Any]) -> None:
    perf = sample_report["performance"]
    assert perf["onnxruntime"]["median_ms"] < perf["float"]["median_ms"]
    assert perf["baseline"] == "onnxruntime_fp32"
    assert sample_report["summary"]["speedup_baseline"] == "onnxruntime_fp32"
    slower_float = copy.deepcopy(sample_report)
    slower_float["performance"]["baseline"] = "tvm_float"
    with pytest.raises(ValidationError, match="not the faster float engine"):
        Report.model_validate(slower_float)
    wrong = copy.deepcopy(sample_report)
    wrong["performance"]["speedup"] = wrong["performance"]["speedup_vs_float"]
    with pytest.raises(ValidationError, match=r"speedup .* from the latencies"):
        Report.model_validate(wrong)


def test_a_missing_onnxruntime_figure_needs_its_reason(sample_report: dict[str, Any]) -> None:
    bad = copy.deepcopy(sample_report)
    bad["performance"]["onnxruntime"] = None
    bad["performance"]["baseline"] = "tvm_float"
    bad["performance"]["speedup"] = bad["performance"]["speedup_vs_float"]
    with pytest.raises(ValidationError, match="does not say why"):
        Report.model_validate(bad)
    bad["performance"]["onnxruntime_note"] = "onnxruntime is not installed on this worker"
    bad["summary"].update(speedup_baseline="tvm_float", onnxruntime_latency_ms=None)
    bad["summary"]["speedup"] = bad["performance"]["speedup"]
    Report.model_validate(bad)


def test_summary_must_agree_with_sections(sample_report: dict[str, Any]) -> None:
    bad = copy.deepcopy(sample_report)
    bad["summary"]["speedup"] = 10.0
    with pytest.raises(ValidationError, match="summary disagrees"):
        Report.model_validate(bad)


def test_integral_variant_validates(make_sample_report: Any) -> None:
    report = Report.model_validate(make_sample_report(with_core_float=False))
    assert report.integrality.fully_integral and report.summary.fully_integral
    assert report.integrality.float_in_core == []


def test_json_schema_is_self_describing() -> None:
    schema = report_schema()
    json.dumps(schema)  # serializable as served by GET /report/schema
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {
        "model",
        "summary",
        "integrality",
        "accuracy",
        "performance",
        "provenance",
    }
    op = schema["$defs"]["OpRecord"]["properties"]
    assert set(op["group"]["enum"]) == {"prefix", "core", "suffix", "float_fallback"}


def test_from_ops_derives_verdict_and_counts(sample_report: dict[str, Any]) -> None:
    ops = [OpRecord.model_validate(op) for op in sample_report["integrality"]["ops"]]
    derived = Integrality.from_ops(ops)
    assert derived.fully_integral is False
    assert derived.float_in_core == ["fused_dequantize_sigmoid_quantize"]
    assert derived.counts.integer_ops == 6 and derived.counts.float_ops == 5
    assert derived.counts.integer_macs == 5 * 16 * 32 * 9 * 16 * 16
    assert derived.counts.float_macs == 3 * 16 * 9 * 32 * 32 + 512 * 10
    integral_only = Integrality.from_ops([op for op in ops if op.group != "core" or op.integral])
    assert integral_only.fully_integral is True and integral_only.float_in_core == []
