"""The report page as HTML text: structure, escaping, and that it loads nothing from anywhere."""

from __future__ import annotations

import copy
import html
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from pydantic import ValidationError

from worker.report.html import render_report_html

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&'


class _Collector(HTMLParser):
    """Tags with their attributes, and the text of the page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Collector:
    parser = _Collector()
    parser.feed(page)
    parser.close()
    return parser


def test_hostile_op_name_is_escaped(make_sample_report: Any) -> None:
    page = render_report_html(make_sample_report(hostile_name=HOSTILE))
    parsed = _parse(page)
    assert not [t for t, _ in parsed.tags if t in ("script", "img")]
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
    # the name is still shown, as text, in the op table, the layer chart and the per-layer note
    assert "".join(parsed.text).count(HOSTILE) >= 2


def test_key_elements_have_stable_ids(sample_report: dict[str, Any]) -> None:
    parsed = _parse(render_report_html(sample_report))
    ids = {attrs.get("id") for _, attrs in parsed.tags}
    assert {"model", "summary", "latency-chart", "sqnr-chart", "ops-table", "integral-badge"} <= ids
    bars = [attrs for tag, attrs in parsed.tags if tag == "rect" and attrs.get("class") == "bar"]
    assert len(bars) == len(sample_report["accuracy"]["layers"])
    worst = min(sample_report["accuracy"]["layers"], key=lambda layer: layer["sqnr_db"])
    assert worst["sqnr_db"] < 20
    assert "#c93c3c" in {b["fill"] for b in bars}  # the bad layer is red


def test_kernels_grouped_by_kind_folded_with_every_float_reason(sample_report: dict[str, Any]) -> None:
    page = render_report_html(sample_report)
    parsed = _parse(page)
    ops = sample_report["integrality"]["ops"]
    kinds = [attrs for tag, attrs in parsed.tags if tag == "details" and "data-kind" in attrs]
    assert {k["data-kind"] for k in kinds} == {op["relax_op"] for op in ops}
    assert not [k for k in kinds if "open" in k]  # folded by default
    by_kind = {k["data-kind"]: k["class"] for k in kinds}
    assert by_kind["sigmoid"] == "kind core-float" and by_kind["nn.conv2d"] == "kind float"
    assert by_kind["nn.max_pool2d"] == "kind"
    counts = re.search(r'data-kind="nn.conv2d"><summary>(.*?)</summary>', page).group(1)
    assert re.findall(r"<span>(\d+)</span>", counts) == ["6", "5", "1"]  # kernels, integer, float
    float_rows = [
        attrs["class"] for tag, attrs in parsed.tags if tag == "tr" and "float" in attrs.get("class", "")
    ]
    assert len(float_rows) == sum(not op["integral"] for op in ops) and "float core" in float_rows
    reasons = re.findall(r'<tr class="float[^"]*">(?:<td[^>]*>.*?</td>){6}<td>(.*?)</td></tr>', page)
    assert sorted(reasons) == sorted(
        html.escape(op["reason"], quote=True) for op in ops if not op["integral"]
    )
    assert all(reasons)
    assert "Fully integral: no" in page


def test_header_names_the_model_and_its_tensors(sample_report: dict[str, Any]) -> None:
    page = render_report_html(sample_report)
    header = re.search(r'<header class="model" id="model">(.*?)</header>', page).group(1)
    assert "<h1>resnet-mini.onnx</h1>" in header
    for name, shape in (("image", "(1, 3, 32, 32)"), ("logits", "(1, 10)"), ("embedding", "(1, 64)")):
        assert f"<code>{name}</code></td><td>{shape}</td><td>float32</td>" in header


def test_latency_chart_has_one_bar_per_engine(sample_report: dict[str, Any]) -> None:
    parsed = _parse(render_report_html(sample_report))
    bars = [attrs["data-engine"] for tag, attrs in parsed.tags if tag == "rect" and "data-engine" in attrs]
    assert bars == ["tvm_float", "onnxruntime_fp32", "quantized"]


def test_a_slower_build_says_where_the_time_goes(make_sample_report: Any) -> None:
    faster = render_report_html(make_sample_report())
    assert 'id="speed-note"' not in faster
    slower = make_sample_report(slower=True)
    page = render_report_html(slower)
    note = re.search(r'<p class="note" id="speed-note">(.*?)</p>', page).group(1)
    assert "0.83× the speed of ONNX Runtime fp32" in note
    hot = slower["performance"]["hotspots"]
    assert len(hot) == 5 and all(f"<code>{h['name']}</code>" in note for h in hot)
    assert f"{100 * sum(h['share'] for h in hot):.0f} % of its kernel time" in note


def test_integral_badge_says_yes(make_sample_report: Any) -> None:
    page = render_report_html(make_sample_report(with_core_float=False))
    assert re.search(r'id="integral-badge" class="badge ok">Fully integral: yes<', page)


def test_page_is_self_contained(sample_report: dict[str, Any]) -> None:
    parsed = _parse(render_report_html(sample_report))
    fetching = [
        (tag, attrs)
        for tag, attrs in parsed.tags
        if tag in ("script", "link", "img", "iframe") or any(k in attrs for k in ("src", "href"))
    ]
    assert fetching == []


def test_exact_and_negative_sqnr_layers_render(sample_report: dict[str, Any]) -> None:
    report = copy.deepcopy(sample_report)
    report["accuracy"]["layers"][0]["sqnr_db"] = 200.0
    report["accuracy"]["layers"][1]["sqnr_db"] = -7.5
    page = render_report_html(report)
    assert "exact (≥ 200 dB)" in page and "-7.5 dB" in page
    widths = [float(w) for w in re.findall(r'<rect class="bar"[^>]* width="([0-9.]+)"', page)]
    assert all(w > 0 for w in widths)


def test_invalid_report_is_refused(sample_report: dict[str, Any]) -> None:
    bad = copy.deepcopy(sample_report)
    del bad["performance"]
    with pytest.raises(ValidationError, match="performance"):
        render_report_html(bad)


def test_no_layers_means_no_chart(sample_report: dict[str, Any]) -> None:
    report = copy.deepcopy(sample_report)
    report["accuracy"]["layers"] = []
    page = render_report_html(report)
    assert 'id="sqnr-chart"' not in page and "No per-layer measurements." in page


def test_why_float_shows_the_partitions_reason(sample_report: dict[str, Any]) -> None:
    report = copy.deepcopy(sample_report)
    row = next(op for op in report["integrality"]["ops"] if op["reason"] == "skipped layer")
    row["reason"] = "unsupported: layout NHWC/OHWI (only NCHW/OIHW)"
    page = render_report_html(report)
    cells = re.findall(r"<tr class=\"float[^\"]*\">(?:<td[^>]*>.*?</td>){6}<td>(.*?)</td></tr>", page)
    assert "unsupported: layout NHWC/OHWI (only NCHW/OIHW)" in cells, cells


def test_calibration_table_shows_each_tensors_choice(sample_report: dict[str, Any]) -> None:
    text = " ".join(_parse(render_report_html(sample_report)).text)
    assert "max (fallback from kl_divergence)" in text
    assert "1 tensor(s) fell back to max" in text
    assert "0.04 %" in text and "0.820" in text and "38.5" in text  # clipped, MSE vs max, SQNR
