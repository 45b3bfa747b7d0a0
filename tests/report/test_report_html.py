"""The report page as HTML text: structure, escaping, and that it loads nothing from anywhere."""

from __future__ import annotations

import copy
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
    assert {"summary", "sqnr-chart", "ops-table", "integral-badge"} <= ids
    bars = [attrs for tag, attrs in parsed.tags if tag == "rect" and attrs.get("class") == "bar"]
    assert len(bars) == len(sample_report["accuracy"]["layers"])
    worst = min(sample_report["accuracy"]["layers"], key=lambda layer: layer["sqnr_db"])
    assert worst["sqnr_db"] < 20
    assert "#c93c3c" in {b["fill"] for b in bars}  # the bad layer is red


def test_float_ops_highlighted_and_grouped(sample_report: dict[str, Any]) -> None:
    page = render_report_html(sample_report)
    parsed = _parse(page)
    groups = [attrs["data-group"] for tag, attrs in parsed.tags if tag == "tbody" and "data-group" in attrs]
    assert groups == ["prefix", "core", "suffix", "float_fallback"]
    float_rows = [
        attrs["class"] for tag, attrs in parsed.tags if tag == "tr" and "float" in attrs.get("class", "")
    ]
    n_float = sum(not op["integral"] for op in sample_report["integrality"]["ops"])
    assert len(float_rows) == n_float
    assert "float core" in float_rows
    assert "Fully integral: no" in page


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
    cells = re.findall(r"<tr class=\"float[^\"]*\">(?:<td[^>]*>.*?</td>){7}<td>(.*?)</td></tr>", page)
    assert "unsupported: layout NHWC/OHWI (only NCHW/OIHW)" in cells, cells


def test_calibration_table_shows_each_tensors_choice(sample_report: dict[str, Any]) -> None:
    text = " ".join(_parse(render_report_html(sample_report)).text)
    assert "max (fallback from kl_divergence)" in text
    assert "1 tensor(s) fell back to max" in text
    assert "0.04 %" in text and "0.820" in text and "38.5" in text  # clipped, MSE vs max, SQNR
