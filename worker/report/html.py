"""The report as one self-contained HTML page: inline CSS and an inline SVG chart, no script, no fetch.

The page is served by the API and written by the CLI next to the artifact; it must read well offline
and from a file:// URL, so nothing is loaded from anywhere. Every string that comes from the report
(op names come from the user's ONNX model) goes through `html.escape`. The dict is validated with the
report schema first, so the page can only show a report that is internally consistent.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from worker.report.metrics import SQNR_CAP_DB
from worker.report.schema import (
    BASELINE_TITLES,
    Accuracy,
    Calibration,
    Integrality,
    LayerAccuracy,
    ModelInfo,
    OpGroup,
    OpRecord,
    Performance,
    Provenance,
    Report,
    Search,
    Summary,
)

#: SQNR bands for colouring bars and values: below 20 dB a layer visibly hurts accuracy.
SQNR_BAD_DB = 20.0
SQNR_GOOD_DB = 30.0

_GROUP_TITLES: dict[OpGroup, str] = {
    "prefix": "quantize prefix",
    "core": "integral core",
    "suffix": "dequantize suffix",
    "float_fallback": "float fallback",
}
#: the latency chart's engines: (key, label, colour)
LATENCY_COLORS = {"tvm_float": "#7a869a", "onnxruntime_fp32": "#3f6fb5", "quantized": "#1b7a6e"}
#: backgrounds of a kind's line that holds float kernels of the core, and of such a kernel's row
KIND_CORE_FLOAT = "#fde4e4"
ROW_CORE_FLOAT = "#fbeaea"

_CSS = """
:root { --ok: #2f8f4e; --bad: #c93c3c; --warn: #d6932a; --muted: #667; --line: #dde; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
  margin: 0; background: #f6f7fa; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 12px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 18px 20px;
  margin: 18px 0; }
.sub { color: var(--muted); margin: 0; }
.badge { display: inline-block; padding: 6px 14px; border-radius: 999px; font-weight: 600;
  color: #fff; margin-right: 8px; }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); }
.badge.neutral { background: #557; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px;
  margin-top: 14px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card .label { color: var(--muted); font-size: 13px; }
.card .value { font-size: 22px; font-weight: 600; }
.q-bad { color: var(--bad); } .q-warn { color: var(--warn); } .q-good { color: var(--ok); }
.note { margin: 12px 0 0; padding: 8px 12px; border-left: 4px solid var(--bad); background: #fdf0f0;
  overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td code { overflow-wrap: anywhere; }
td.dtypes { white-space: nowrap; }
.scroll { overflow-x: auto; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.group th { background: #eef0f6; font-size: 14px; }
tr.float td { background: #fff8ee; }
tr.float.core td, tr.float.float_fallback td { background: ROW_CORE_FLOAT; }
code, pre { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f3f4f8; padding: 10px; border-radius: 6px; overflow: auto; max-height: 420px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; word-break: break-all; }
.legend span { display: inline-block; margin-right: 16px; font-size: 13px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 5px; vertical-align: -1px; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2330; }
svg .axis-label { font-size: 13px; font-weight: 600; }
footer { color: var(--muted); font-size: 13px; text-align: center; }
header.model table { width: auto; margin-top: 10px; }
details.kind { border-bottom: 1px solid var(--line); }
details.kind > summary { cursor: pointer; padding: 6px 8px; display: grid;
  grid-template-columns: 2fr 1fr 1fr 1fr 2fr; gap: 8px; font-variant-numeric: tabular-nums; }
details.kind > summary.head { cursor: default; font-weight: 600; list-style: none; }
details.kind.float > summary { background: #fff3e0; }
details.kind.core-float > summary { background: KIND_CORE_FLOAT; }
details.kind table { margin: 4px 0 10px; }
ul.reasons { margin: 8px 0 12px; padding-left: 20px; }
"""


_CSS = _CSS.replace("ROW_CORE_FLOAT", ROW_CORE_FLOAT).replace("KIND_CORE_FLOAT", KIND_CORE_FLOAT)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _quality(sqnr: float) -> str:
    if sqnr < SQNR_BAD_DB:
        return "bad"
    return "warn" if sqnr < SQNR_GOOD_DB else "good"


_NUM = ' class="num"'
BAR_COLORS = {"bad": "#c93c3c", "warn": "#d6932a", "good": "#2f8f4e"}


def _db(sqnr: float) -> str:
    return f"exact (≥ {SQNR_CAP_DB:.0f} dB)" if sqnr >= SQNR_CAP_DB else f"{sqnr:.1f} dB"


def _ms(value: float) -> str:
    return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


def _bytes(n: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _values(values: float | list[float]) -> str:
    if isinstance(values, list):
        return f"{len(values)} channels, {min(values):.4g} … {max(values):.4g}" if values else "none"
    return f"{values:.4g}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table from already-escaped cell HTML; columns listed in `numeric` are right-aligned."""
    head = "".join(f"<th{_NUM if i in numeric else ''}>{h}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{_NUM if i in numeric else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _card(label: str, value: str, css_class: str = "") -> str:
    cls = f' class="value {css_class}"' if css_class else ' class="value"'
    return f'<div class="card"><div class="label">{_e(label)}</div><div{cls}>{_e(value)}</div></div>'


def _is_int(dtype: str) -> bool:
    return dtype.startswith(("int", "uint", "bool"))


def _shape(shape: list[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _header(model: ModelInfo, created: str) -> str:
    rows = [
        [_e(kind), f"<code>{_e(t.name)}</code>", _e(_shape(t.shape)), _e(t.dtype)]
        for kind, tensors in (("input", model.inputs), ("output", model.outputs))
        for t in tensors
    ]
    return (
        f'<header class="model" id="model"><h1>{_e(model.file)}</h1>'
        f'<p class="sub">tvmq verification report, created {_e(created)}</p>'
        f"{_table(['', 'Tensor', 'Shape', 'Dtype'], rows)}</header>"
    )


def _speed_sentence(p: Performance) -> str:
    """Where the time goes, when the quantized build is slower than the faster float engine."""
    if p.speedup >= 1:
        return ""
    against = BASELINE_TITLES[p.baseline]
    if not p.hotspots:
        return f'<p class="note" id="speed-note">The quantized build is slower than {_e(against)}.</p>'
    share = sum(h.share for h in p.hotspots)
    kernels = ", ".join(
        f"<code>{_e(h.name)}</code> ({_e(h.relax_op)}"
        f"{', ' + _count(h.calls, 'call') if h.calls > 1 else ''}) {_e(_ms(h.ms))}"
        for h in p.hotspots
    )
    return (
        f'<p class="note" id="speed-note">The quantized build is {p.speedup:.2f}× the speed of '
        f"{_e(against)}: {100 * share:.0f} % of its kernel time is in {_count(len(p.hotspots), 'kernel')}: "
        f"{kernels}.</p>"
    )


def _summary(s: Summary, integrality: Integrality, performance: Performance) -> str:
    badge = (
        '<span id="integral-badge" class="badge ok">Fully integral: yes</span>'
        if s.fully_integral
        else '<span id="integral-badge" class="badge bad">Fully integral: no</span>'
    )
    if s.do_simulation:
        badge += '<span class="badge neutral">simulation build (do_simulation)</span>'
    against = BASELINE_TITLES[s.speedup_baseline]
    cards = [
        _card("Cosine similarity", f"{s.cosine:.6f}"),
        _card("SQNR (worst output)", _db(s.sqnr_db), f"q-{_quality(s.sqnr_db)}"),
        _card("Top-1 agreement", _pct(s.top1_agreement)),
        _card(f"Speed-up vs {against}", f"{s.speedup:.2f}×", "q-good" if s.speedup >= 1 else "q-bad"),
        _card("Quantized latency (median)", _ms(s.quantized_latency_ms)),
        _card("Calibration", s.calibrate_mode),
    ]
    note = ""
    if integrality.float_in_core:
        names = ", ".join(f"<code>{_e(n)}</code>" for n in dict.fromkeys(integrality.float_in_core))
        note = f'<p class="note">Float kernels inside the integral core: {names}</p>'
    return (
        f'<section id="summary"><h2>Summary</h2><div>{badge}</div>'
        f'<div class="cards">{"".join(cards)}</div>{note}{_speed_sentence(performance)}'
        f"{_latency_chart(performance)}</section>"
    )


def _latency_chart(p: Performance) -> str:
    """One bar per engine measured (median, with its p90 as a whisker), on one linear axis."""
    engines = [("tvm_float", "our float build", p.float)]
    if p.onnxruntime is not None:
        engines.append(("onnxruntime_fp32", "ONNX Runtime fp32", p.onnxruntime))
    engines.append(("quantized", "int8 (this artifact)", p.quantized))
    label_w, plot_w, value_w, bar_h, gap, top = 170, 560, 150, 22, 10, 8
    hi = 1.25 * max(lat.median_ms for _, _, lat in engines) or 1.0  # a noisy p90 is cut, not scaled
    height = top + len(engines) * (bar_h + gap) + 20
    parts = []
    for i, (key, label, lat) in enumerate(engines):
        y = top + i * (bar_h + gap)
        w = max(plot_w * lat.median_ms / hi, 1.0)
        whisker = label_w + plot_w * min(lat.p90_ms / hi, 1.0)
        title = f"{label}: median {_ms(lat.median_ms)}, p90 {_ms(lat.p90_ms)}"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h - 6}" text-anchor="end">{_e(label)}</text>'
            f'<rect class="latency" data-engine="{key}" x="{label_w}" y="{y}" width="{w:.1f}" '
            f'height="{bar_h}" fill="{LATENCY_COLORS[key]}"><title>{_e(title)}</title></rect>'
            f'<line x1="{label_w + w:.1f}" y1="{y + bar_h / 2}" x2="{whisker:.1f}" y2="{y + bar_h / 2}" '
            f'stroke="#1d2330" />'
            f'<text x="{label_w + plot_w + 8}" y="{y + bar_h - 6}">{_e(_ms(lat.median_ms))}</text>'
        )
    parts.append(
        f'<text x="{label_w}" y="{height - 4}" class="axis-label">median latency, {p.threads} '
        f"thread(s); the line reaches the p90</text>"
    )
    return (
        f'<svg id="latency-chart" xmlns="http://www.w3.org/2000/svg" width="100%" '
        f'viewBox="0 0 {label_w + plot_w + value_w} {height}" role="img" '
        f'aria-label="Median latency of each engine">{"".join(parts)}</svg>'
    )


def _nice_step(span: float) -> float:
    """A 1/2/5×10ⁿ tick step giving about six ticks over `span`."""
    raw = span / 6
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _sqnr_chart(layers: list[LayerAccuracy]) -> str:
    """Horizontal bars, one per layer in graph order (top to bottom), so long models stay legible.

    The x axis stops at 100 dB (or the largest value if lower, at least 40 dB): exact layers at the
    cap would otherwise flatten every real difference. Bars past the axis end are cut; their labels
    still give the true value.
    """
    label_w, value_w, bar_h, gap, top, bottom, plot_w = 280, 120, 16, 5, 16, 56, 600
    values = [layer.sqnr_db for layer in layers]
    step = _nice_step(max(40.0, min(max(values), 100.0)) - min(0.0, min(values)))
    lo = max(-60.0, step * math.floor(min(0.0, min(values)) / step))
    hi = step * math.ceil(max(40.0, min(max(values), 100.0)) / step)
    height = top + len(layers) * (bar_h + gap) + bottom
    width = label_w + plot_w + value_w

    def x(v: float) -> float:
        return label_w + plot_w * (min(max(v, lo), hi) - lo) / (hi - lo)

    parts = []
    tick = lo
    while tick <= hi + 1e-9:
        parts.append(
            f'<line x1="{x(tick):.1f}" y1="{top - 4}" x2="{x(tick):.1f}" y2="{height - bottom + 4}" '
            f'stroke="#dde" />'
            f'<text x="{x(tick):.1f}" y="{height - bottom + 20}" text-anchor="middle">{tick:g}</text>'
        )
        tick += step
    parts.append(
        f'<line x1="{x(SQNR_BAD_DB):.1f}" y1="{top - 4}" x2="{x(SQNR_BAD_DB):.1f}" '
        f'y2="{height - bottom + 4}" stroke="#c93c3c" stroke-dasharray="4 3" />'
    )
    for i, layer in enumerate(layers):
        y = top + i * (bar_h + gap)
        x0, x1 = sorted((x(0.0), x(layer.sqnr_db)))
        title = f"{layer.name} ({layer.op}): {_db(layer.sqnr_db)}, cosine {layer.cosine:.5f}"
        label = layer.name if len(layer.name) <= 38 else layer.name[:37] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h - 4}" text-anchor="end">{_e(label)}'
            f"<title>{_e(title)}</title></text>"
            f'<rect class="bar" x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1.0):.1f}" height="{bar_h}" '
            f'fill="{BAR_COLORS[_quality(layer.sqnr_db)]}"><title>{_e(title)}</title></rect>'
            f'<text x="{label_w + plot_w + 8}" y="{y + bar_h - 4}">{_e(_db(layer.sqnr_db))}</text>'
        )
    parts.append(
        f'<line x1="{label_w}" y1="{height - bottom + 4}" x2="{label_w + plot_w}" '
        f'y2="{height - bottom + 4}" stroke="#667" />'
        f'<text class="axis-label" x="{label_w + plot_w / 2}" y="{height - 8}" text-anchor="middle">'
        "SQNR of the int8 tensor vs float (dB)</text>"
        f'<text class="axis-label" x="{label_w - 8}" y="{height - 8}" text-anchor="end">'
        "tensor (graph order ↓)</text>"
    )
    return (
        f'<svg id="sqnr-chart" xmlns="http://www.w3.org/2000/svg" width="100%" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Per-layer SQNR in dB, {len(layers)} layers in graph order">{"".join(parts)}</svg>'
    )


def _layers(accuracy: Accuracy) -> str:
    if not accuracy.layers:
        return '<section id="layers"><h2>Per-layer SQNR</h2><p>No per-layer measurements.</p></section>'
    legend = "".join(
        f'<span><i style="background:{BAR_COLORS[q]}"></i>{_e(text)}</span>'
        for q, text in (
            ("bad", f"< {SQNR_BAD_DB:g} dB"),
            ("warn", f"{SQNR_BAD_DB:g}–{SQNR_GOOD_DB:g} dB"),
            ("good", f"≥ {SQNR_GOOD_DB:g} dB"),
        )
    )
    worst = min(accuracy.layers, key=lambda layer: layer.sqnr_db)
    return (
        '<section id="layers"><h2>Per-layer SQNR</h2>'
        '<p class="sub">Where accuracy is lost: each int8 tensor the artifact writes out (what its '
        "integer kernels read) against the float model's tensor there, on "
        f"{_count(accuracy.layer_samples, 'sample')}. "
        f"Worst: <code>{_e(worst.name)}</code> ({_e(worst.op)}) at {_e(_db(worst.sqnr_db))}.</p>"
        f'<p class="legend">{legend}</p>{_sqnr_chart(accuracy.layers)}</section>'
    )


def _accuracy(accuracy: Accuracy) -> str:
    origin = (
        "held-out samples (not seen by calibration)"
        if accuracy.held_out
        else "samples that calibration also saw (no held-out split)"
    )
    rows = [
        [
            f"<code>{_e(o.name)}</code>",
            f"{o.cosine:.6f}",
            f'<span class="q-{_quality(o.sqnr_db)}">{_e(_db(o.sqnr_db))}</span>',
            f"{o.max_abs_error:.4g}",
            f"{o.mean_abs_error:.4g}",
            _e(_pct(o.top1_agreement)),
            f'<span class="q-bad">{o.nonfinite}</span>' if o.nonfinite else "0",
        ]
        for o in accuracy.outputs
    ]
    table = _table(
        ["Output", "Cosine", "SQNR", "Max |error|", "Mean |error|", "Top-1 agreement", "NaN/inf"],
        rows,
        numeric=(1, 2, 3, 4, 5, 6),
    )
    return (
        f'<section id="accuracy"><h2>Accuracy</h2><p class="sub">Float vs quantized outputs on '
        f"{accuracy.samples} {_e(origin)}.</p>{table}</section>"
    )


def _kind_rows(members: list[tuple[int, OpRecord]]) -> str:
    rows = []
    for i, op in members:
        cls = "int" if op.integral else f"float {op.group}"
        floats = [d for d in op.computes if not _is_int(d)]
        dtypes = f"{', '.join(op.inputs)} → {', '.join(op.outputs)}"
        if op.exact_float:
            dtypes += f" (integer ops computed exactly in {', '.join(floats)})"
        elif floats and all(map(_is_int, op.inputs + op.outputs)):  # integer buffers, float inside
            dtypes += f" (computes {', '.join(floats)})"
        rows.append(
            f'<tr class="{cls}"><td class="num">{i}</td><td><code>{_e(op.name)}</code></td>'
            f"<td>{_e(_GROUP_TITLES[op.group])}</td><td>{_e(', '.join(dict.fromkeys(op.relax_ops)))}</td>"
            f'<td class="dtypes">{_e(dtypes)}</td><td class="num">{op.macs:,}</td>'
            f"<td>{_e(op.reason or '')}</td></tr>"
        )
    head = "".join(
        f"<th{_NUM if h in ('#', 'MACs') else ''}>{h}</th>"
        for h in ("#", "Kernel", "Group", "Relax ops", "Dtypes", "MACs", "Why float")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _ops(integrality: Integrality) -> str:
    """Kernels grouped by kind (one folded line each, with counts); the rows inside. Every float
    kernel's reason is in its row, and the reasons are counted above the table."""
    c = integrality.counts
    total_macs = c.integer_macs + c.float_macs
    int_share = f" ({100 * c.integer_macs / total_macs:.1f} % of MACs)" if total_macs else ""
    kinds: dict[str, list[tuple[int, OpRecord]]] = {}
    for i, op in enumerate(integrality.ops):
        kinds.setdefault(op.relax_op, []).append((i, op))
    order = sorted(kinds, key=lambda k: (-sum(op.macs for _, op in kinds[k]), -len(kinds[k]), k))
    lines = [
        '<details class="kind head"><summary class="head"><span>Kind</span><span>Kernels</span>'
        "<span>Integer</span><span>Float</span><span>MACs · groups</span></summary></details>"
    ]
    for kind in order:
        members = kinds[kind]
        floats = sum(not op.integral for _, op in members)
        core_float = any(not op.integral and op.group == "core" for _, op in members)
        cls = "kind core-float" if core_float else "kind float" if floats else "kind"
        groups = ", ".join(dict.fromkeys(_GROUP_TITLES[op.group] for _, op in members))
        lines.append(
            f'<details class="{cls}" data-kind="{_e(kind)}"><summary><span><code>{_e(kind)}</code></span>'
            f"<span>{len(members)}</span><span>{len(members) - floats}</span><span>{floats}</span>"
            f"<span>{sum(op.macs for _, op in members):,} · {_e(groups)}</span></summary>"
            f"{_kind_rows(members)}</details>"
        )
    reasons: dict[str, int] = {}
    for op in integrality.ops:
        if op.reason:
            reasons[op.reason] = reasons.get(op.reason, 0) + 1
    why = "".join(f"<li>{_e(r)}: {_count(n, 'kernel')}</li>" for r, n in reasons.items())
    why_html = f'<p>Why kernels are float:</p><ul class="reasons">{why}</ul>' if why else ""
    return (
        '<section id="integrality"><h2>Integrality of the compiled module</h2>'
        '<p class="sub">Every kernel the library\'s <code>main</code> calls, as the library exports it: '
        f"{_count(c.integer_ops, 'integer kernel call')}{int_share}, "
        f"{_count(c.float_ops, 'float kernel call')}. Click a kind to see its kernels; red kinds "
        "have float work inside the integral core.</p>"
        f'{why_html}<div class="scroll" id="ops-table">{"".join(lines)}</div></section>'
    )


def _tables(integrality: Integrality) -> str:
    if not integrality.tables:
        return ""
    rows = [
        [
            f"<code>{_e(t.name)}</code>",
            _e(t.function),
            _e(t.form),
            f"{t.input_scale:.4g}",
            f"{t.output_scale:.4g}",
            "" if t.max_abs_error is None else f"{t.max_abs_error:.3g}",
            "" if t.max_error_steps is None else f"{t.max_error_steps:.2f}",
            "" if t.clipped_levels is None else str(t.clipped_levels),
        ]
        for t in integrality.tables
    ]
    headers = [
        "Op",
        "Function",
        "Form",
        "Input scale",
        "Output scale",
        "Max abs error",
        "In steps",
        "Clipped",
    ]
    return (
        '<section id="tables"><h2>Non-linear ops in integers</h2><p class="sub">Lookup tables with '
        "their largest error against the float function over the input levels on the output grid, "
        "the levels the calibrated output range clips, and the integer forms of softmax and layer "
        f"norm.</p>{_table(headers, rows, numeric=(3, 4, 5, 6, 7))}</section>"
    )


def _performance(p: Performance) -> str:
    rows = [
        [
            "Our float build",
            _ms(p.float.median_ms),
            _ms(p.float.p90_ms),
            _bytes(p.float_artifact_bytes),
            _bytes(p.weight_bytes_float),
        ],
    ]
    if p.onnxruntime is not None:
        rows.append(["ONNX Runtime fp32", _ms(p.onnxruntime.median_ms), _ms(p.onnxruntime.p90_ms), "", ""])
    rows.append(
        [
            "Quantized build",
            _ms(p.quantized.median_ms),
            _ms(p.quantized.p90_ms),
            _bytes(p.artifact_bytes),
            _bytes(p.weight_bytes_quantized),
        ]
    )
    table = _table(["", "Median", "p90", "Library size", "Weights"], rows, numeric=(1, 2, 3, 4))
    ort = "" if p.onnxruntime is not None else f" ONNX Runtime: {_e(p.onnxruntime_note or 'not measured')}."
    return (
        f'<section id="performance"><h2>Performance</h2><p class="sub">{p.runs} interleaved runs per '
        f"engine in one process, {p.threads} thread(s) each. Speed-up {p.speedup:.2f}× against "
        f"{_e(BASELINE_TITLES[p.baseline])} (the faster float engine), {p.speedup_vs_float:.2f}× against "
        f"our float build.{ort}</p>{table}</section>"
    )


def _share(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.3g} %"


def _number(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _calibration(cal: Calibration) -> str:
    rows = [
        [
            f"<code>{_e(t.name)}</code>",
            _e(t.kind),
            _e(t.method),
            _e(_values(t.threshold)),
            _e(_values(t.scale)),
            _e(_share(t.clipped)),
            _e(_number(t.mse_vs_max, ".3f")),
            _e(_number(t.sqnr_db, ".1f")),
        ]
        for t in cal.tensors
    ]
    table = _table(
        ["Tensor", "Kind", "Method", "Threshold", "Scale", "Clipped", "MSE vs max", "SQNR dB (expected)"],
        rows,
        numeric=(5, 6, 7),
    )
    fallbacks = sum(t.method.startswith("max (fallback") for t in cal.tensors)
    note = f" {fallbacks} tensor(s) fell back to max: the mode's threshold was worse." if fallbacks else ""
    return (
        f'<section id="calibration"><h2>Calibration</h2><p class="sub">Method {_e(cal.method)}: '
        f"{cal.samples_seen} samples in {cal.batches} batches.{_e(note)} Clipped, MSE vs max (expected "
        "quantization error relative to the max threshold's, above 1 = worse) and SQNR are read from "
        f"the calibration histogram.</p>{table}</section>"
    )


def _isa(p: Provenance) -> str:
    used = p.isa or "none (TVM's default int8 lowering)"
    return f'{used}; target "native" would use {p.native_isa}' if p.native_isa else used


def _pipeline(p: Provenance) -> str:
    if p.pipeline == "tvmq":
        return "tvmq (worker/kernels)"
    return f"TVM's default (fallback: ours failed with {p.pipeline_fallback})"


def _provenance(p: Provenance) -> str:
    facts = [
        ("Model sha256", p.model_sha256),
        ("Calibration sha256", p.calibration_sha256 or "none (no calibration data)"),
        ("Artifact sha256", p.artifact_sha256),
        ("TVM", p.tvm_version),
        ("tvmq", p.tvmq_version),
        ("Target", json.dumps(p.target, sort_keys=True)),
        ("Int8 kernels", _isa(p)),
        ("Build pipeline", _pipeline(p)),
        ("Created", p.created_at.isoformat()),
    ]
    facts += [
        (f"Specialised input '{s.input}'", f"only {s.value} accepted; {', '.join(s.branches)}")
        for s in p.specialized_inputs
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd><code>{_e(v)}</code></dd>" for k, v in facts)
    timings = [*p.stage_seconds.items(), ("total", sum(p.stage_seconds.values()))]
    stages = _table(["Stage", "Seconds"], [[_e(k), f"{v:.2f}"] for k, v in timings], numeric=(1,))
    qconfig = _e(json.dumps(p.qconfig, indent=2, sort_keys=True))
    return (
        f'<section id="provenance"><h2>Provenance</h2><dl>{dl}</dl><h3>Stage wall time</h3>{stages}'
        f"<h3>qconfig as applied</h3><pre>{qconfig}</pre></section>"
    )


def _search_chart(search: Search) -> str:
    """Metric per trial (dots, green where the target holds), the target as a dashed line, the
    built winner ringed."""
    left, right, top, bottom, plot_w, plot_h = 70, 20, 16, 46, 760, 220
    values = [t.metric for t in search.trials] + [search.target]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 0.05
    lo, hi = lo - pad, hi + pad
    count = max(len(search.trials) - 1, 1)

    def x(i: int) -> float:
        return left + plot_w * i / count

    def y(v: float) -> float:
        return top + plot_h * (hi - v) / (hi - lo)

    parts = [
        f'<line x1="{left}" y1="{y(search.target):.1f}" x2="{left + plot_w}" y2="{y(search.target):.1f}" '
        f'stroke="#c93c3c" stroke-dasharray="5 4" /><text x="{left + plot_w}" y="{y(search.target) - 5:.1f}" '
        f'text-anchor="end">target {search.target:.4g}</text>'
    ]
    for t in search.trials:
        color = BAR_COLORS["good" if t.meets else "bad"]
        title = f"trial {t.index} ({t.phase}): {t.metric:.5g}, {t.float_layers} float layer(s)"
        parts.append(
            f'<circle cx="{x(t.index):.1f}" cy="{y(t.metric):.1f}" r="5" fill="{color}">'
            f"<title>{_e(title)}</title></circle>"
        )
    w = search.trials[search.winner]
    parts.append(
        f'<circle id="search-winner" cx="{x(w.index):.1f}" cy="{y(w.metric):.1f}" r="10" fill="none" '
        f'stroke="#1d2330" stroke-width="2" /><text x="{x(w.index):.1f}" y="{y(w.metric) - 14:.1f}" '
        'text-anchor="middle">winner</text>'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#667" />'
        f'<text x="{left}" y="{top + plot_h + 18}">0</text>'
        f'<text x="{left + plot_w}" y="{top + plot_h + 18}" text-anchor="end">{len(search.trials) - 1}</text>'
        f'<text class="axis-label" x="{left + plot_w / 2}" y="{top + plot_h + 36}" text-anchor="middle">'
        "trial</text>"
        f'<text class="axis-label" x="8" y="{top + 12}">{_e(search.metric)}</text>'
    )
    width, height = left + plot_w + right, top + plot_h + bottom
    return (
        f'<svg id="search-chart" xmlns="http://www.w3.org/2000/svg" width="100%" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="search metric per trial">'
        f"{''.join(parts)}</svg>"
    )


def _search(search: Search | None) -> str:
    if search is None:
        return ""
    verdict = "ok" if search.verdict == "met" else "bad"
    built = "" if search.built_metric is None else f" The built winner scores {search.built_metric:.5g}."
    rows = [
        [
            f"<b>{t.index}</b>" if t.index == search.winner else str(t.index),
            _e(t.phase),
            f"<code>{_e(json.dumps(t.delta, sort_keys=True))}</code>" if t.delta else "—",
            f"{t.metric:.5g}",
            "yes" if t.meets else "no",
            str(t.float_layers),
            _pct(t.integer_mac_share),
            f"{t.seconds:.2f} s",
        ]
        for t in search.trials
    ]
    table = _table(
        [
            "Trial",
            "Phase",
            "Config delta",
            _e(search.metric),
            "Meets",
            "Float layers",
            "Integer MACs",
            "Time",
        ],
        rows,
        numeric=(3, 5, 6, 7),
    )
    blocking = (
        f'<p class="note">Blocking: {", ".join(f"<code>{_e(b)}</code>" for b in search.blocking)}</p>'
        if search.blocking
        else ""
    )
    return (
        f'<section id="search"><h2>Accuracy-target search</h2><div><span class="badge {verdict}">'
        f"{_e(search.verdict)}</span></div><p>{_e(search.why)}.{_e(built)}</p>{blocking}"
        f'<p class="sub">{_e(search.metric)} on {search.samples} {_e(search.source)} samples (output '
        f"<code>{_e(search.output)}</code>), target {search.target:.5g}; {len(search.trials)} trials in "
        f"{search.seconds:.1f} s on the simulated module, the winner (trial {search.winner}) built for real; "
        f"its delta: <code>{_e(json.dumps(search.winner_delta, sort_keys=True))}</code>.</p>"
        f'{_search_chart(search)}<div class="scroll">{table}</div></section>'
    )


def render_report_html(report: dict[str, Any]) -> str:
    """The whole page for one report dict (as stored in report.json)."""
    r = Report.model_validate(report)
    body = "".join(
        [
            _header(r.model, r.provenance.created_at.isoformat()),
            _summary(r.summary, r.integrality, r.performance),
            _search(r.search),
            _layers(r.accuracy),
            _accuracy(r.accuracy),
            _ops(r.integrality),
            _tables(r.integrality),
            _performance(r.performance),
            _calibration(r.calibration),
            _provenance(r.provenance),
        ]
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>tvmq report: {_e(r.model.file)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}<footer>report schema {_e(r.schema_version)} · generated by tvmq "
        f"{_e(r.provenance.tvmq_version)}</footer></main></body></html>"
    )
