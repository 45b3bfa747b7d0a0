"""The run as a table: printed, and written to RESULTS.md with the machine it ran on."""

from __future__ import annotations

import json
from typing import Any

from bench.realmodels.runner import LATENCY_ROUNDS, LATENCY_RUNS, TVMQ_FLOAT

ORT_INT8 = (("ort_int8_per_tensor", "ORT int8 per-tensor"), ("ort_int8_per_channel", "ORT int8 per-channel"))
HEADER = (
    "model",
    "load",
    "ORT fp32 ms",
    "tvmq float ms",
    "ORT int8 per-tensor",
    "ORT int8 per-channel",
    "tvmq qconfig",
    "outcome",
    "task metric",
    "cosine",
    "tvmq int8 ms",
    "ops kept float",
    "build s",
)


def short(text: str, limit: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _outcome(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "not run"
    if entry.get("code") == "ok":
        return "ok"
    return f"{entry.get('code')}: {short(entry.get('message', ''))}"


def _metric(entry: dict[str, Any] | None) -> str:
    if not entry or "text" not in entry:
        return "—"
    extra = "".join(f", {k} {v:.3f}" for k, v in entry.get("extra", {}).items() if k == "box_f1")
    return f"{entry['text']}{extra}"


def _ms(entry: dict[str, Any] | None) -> str:
    """Wall ms, with the CPU ms in brackets where the run recorded them."""
    if not entry or "latency_ms" not in entry:
        return "—"
    cpu = f" ({entry['cpu_ms']:.2f})" if "cpu_ms" in entry else ""
    return f"{entry['latency_ms']:.2f}{cpu}"


def _ort_int8(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("code") != "ok":
        return _outcome(entry)
    quantized = entry.get("info", {}).get("quantize_nodes")
    note = " (no op quantized)" if quantized == 0 else ""
    return f"{_metric(entry)} · {_ms(entry)} ms{note}"


def _search(s: dict[str, Any]) -> str:
    built = "" if s.get("built_metric") is None else f", built {s['built_metric']:.4f}"
    share = "" if s.get("integer_mac_share") is None else f", integer MACs {s['integer_mac_share']:.1%}"
    stopped = f", stopped by {s['stopped']}" if s.get("stopped") else ""
    return (
        f"{s['verdict']} ({s['metric']} >= {s['target']:.4f} on {s['samples']} samples): "
        f"{s['trials']} trials in {s['seconds']:.0f} s{stopped}; winner trial {s['winner']} "
        f"{json.dumps(s['winner_delta'])}, {s['winner_metric']:.4f}{built}, "
        f"{s['float_layers']} layer(s) float{share}"
    )


def rows(result: dict[str, Any], qconfig_names: list[str]) -> list[list[str]]:
    name = result["model"]
    if "error" in result and not result.get("engines"):
        return [[name, "", "—", "—", "—", "—", "", f"failed: {short(result['error'])}", "", "", "", "", ""]]
    engines = result.get("engines", {})
    fp32 = engines.get("ort_fp32")
    load = f"{fp32['load_average'][0]:.1f}" if fp32 else ""
    head = [
        name,
        load,
        _ms(fp32),
        _ms(engines.get(TVMQ_FLOAT)),
        *(_ort_int8(engines.get(key)) for key, _ in ORT_INT8),
    ]
    out = []
    for i, qname in enumerate(qconfig_names):
        entry = engines.get(f"tvmq:{qname}")
        info = (entry or {}).get("info", {})
        cosine = entry.get("cosine") if entry else None
        out.append(
            [
                *(head if i == 0 else [""] * len(head)),
                qname,
                _outcome(entry),
                _metric(entry),
                "—" if cosine is None else f"{cosine:.4f}",
                _ms(entry),
                str(info["float_ops"]) if "float_ops" in info else "—",
                f"{entry['seconds']:.0f}" if entry and entry.get("seconds") else "—",
            ]
        )
    return out


def table(results: list[dict[str, Any]], qconfig_names: list[str]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for result in results:
        lines += ["| " + " | ".join(row) + " |" for row in rows(result, qconfig_names)]
    return "\n".join(lines)


def markdown(run: dict[str, Any]) -> str:
    m = run["machine"]
    names = [n for n, _ in run["qconfigs"]]
    metric_lines = [
        f"- `{r['model']}` ({r.get('wheel', '?')}, `{r.get('onnx', '?')}`): {r.get('summary', '')}"
        for r in run["results"]
    ]
    kept_lines = [
        f"- `{r['model']}` `{name.removeprefix('tvmq:')}`: "
        + ", ".join(f"{op} × {n}" for op, n in e["info"]["float_reasons"].items())
        for r in run["results"]
        for name, e in r.get("engines", {}).items()
        if e.get("info", {}).get("float_reasons")
    ]
    search_lines = [
        f"- `{r['model']}` `{name.removeprefix('tvmq:')}`: {_search(e['info']['search'])}"
        for r in run["results"]
        for name, e in r.get("engines", {}).items()
        if e.get("info", {}).get("search")
    ]
    qconfig_lines = [f"- `{n}`: `{json.dumps(q)}`" for n, q in run["qconfigs"]]
    return "\n".join(
        [
            "# Real-model corpus: tvmq vs ONNX Runtime int8",
            "",
            f"Written by `{run['command']}` on {m['date']}; "
            f"the whole run took {run['seconds'] / 60:.1f} min."
            + ("" if run.get("complete") else f" Partial: {len(run['results'])} model(s) so far."),
            "",
            f"Machine: `{m['cpu']}` (lscpu), LLVM `{m['llvm_cpu']}`, {m['cores']} cores; "
            f"load average {m['load_average']} at the start, {run['load_average_end']} at the end "
            "(column `load`: 1-minute load when the model's latencies were taken). "
            f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}, Python {m['python']}.",
            "",
            f"Latencies: ms at {run['threads']} thread(s), wall (process CPU time in brackets): every "
            "engine of a model in one process on the same feed, after all are built, taking turns "
            f"({LATENCY_ROUNDS} rounds of {LATENCY_RUNS} calls, median of the rounds' medians). "
            "Task metrics compare each engine's decoded output with ONNX Runtime fp32 on "
            f"{run['samples']} evaluation inputs per model (calibration: as many, disjoint); "
            "cosine is taken over the raw outputs of all of them. `ops kept float` and `build s` come from "
            "`tvmq quantize` (report.json: ops of its float fallback group; wall time of the whole command, "
            "with its float baseline build and its own verification). `tvmq float ms`: the float build "
            "`tvmq quantize` makes as its baseline (`float_model.so`), timed with the others.",
            "",
            table(run["results"], names),
            "",
            "Models, inputs and metrics:",
            *metric_lines,
            "",
            "Ops kept float by tvmq (op (reason) × count):",
            *(kept_lines or ["- none (no tvmq build succeeded, or every op was quantized)"]),
            "",
            *(
                [
                    "Accuracy-target searches (metric on the held-out calibration samples; the winner "
                    "is the row's artifact):",
                    *search_lines,
                    "",
                ]
                if search_lines
                else []
            ),
            "tvmq qconfigs (`tvmq quantize -q`, exactly these; a search's metric `model` is each "
            "model's own: `ctc_string_agreement` for the recognizers, `top1_agreement` for magika, "
            "else `cosine`):",
            *qconfig_lines,
            "",
        ]
    )
