"""The report as the pipeline writes it: verdicts, per-layer SQNR that points at the damage, latencies
from real runs; and the page served by a running stack (`tvmq serve`), rendered in Chromium."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import tests.models as models
from tests.chromium import run_chromium
from tests.quantize.conftest import INTEGRAL, quantize
from worker.report.schema import Report
from worker.runtime.stack import free_port

REPO = Path(__file__).resolve().parents[2]


def test_report_validates_and_numbers_come_from_runs(tmp_path):
    model = models.small_cnn()
    result = quantize(
        tmp_path,
        model,
        models.random_calibration(model, 20, 0),
        calibrate_mode="max",
        per_channel=True,
        weight_scale="max",
        **INTEGRAL,
    )
    report = Report.model_validate(result.report)
    perf = report.performance
    assert perf.float.median_ms > 0 and perf.quantized.median_ms > 0 and perf.runs == INTEGRAL["bench_runs"]
    assert perf.artifact_bytes == result.artifact.stat().st_size
    assert perf.weight_bytes_quantized < perf.weight_bytes_float
    assert report.accuracy.held_out and report.accuracy.samples == 4  # 20 // 5 held out
    assert report.calibration.samples_seen == 16
    activations = [t for t in report.calibration.tensors if t.kind != "weight"]
    assert activations and all(t.method == "max" and t.mse_vs_max == 1.0 for t in activations)
    assert all(t.clipped == 0.0 and t.sqnr_db > 20 and t.nbit == 8 for t in activations)
    assert report.integrality.fully_integral and report.integrality.counts.integer_macs > 0
    # per int8 tensor the artifact writes out (one fused into its consumer is not), in graph order
    names = [layer.name for layer in report.accuracy.layers]
    assert names[0] == "x" and len(names) > 1
    groups = {op.group for op in report.integrality.ops}
    assert groups >= {"prefix", "core", "suffix"}
    assert report.provenance.stage_seconds.keys() >= {"calibrate", "realize", "build", "verify"}


def test_skipped_layers_are_float_fallback_with_reason(tmp_path):
    model = models.small_cnn()
    result = quantize(
        tmp_path,
        model,
        models.random_calibration(model, 10, 0),
        preset="relay",
        calibrate_mode="max",
        bench_runs=2,
    )  # Relay defaults: first conv and the dense head stay float
    ops = result.report["integrality"]["ops"]
    fallback = [op for op in ops if op["group"] == "float_fallback"]
    # a kernel's reason is its ops' (the skipped conv first, then the epilogue fused into it)
    assert {op["reason"].split("; ")[0] for op in fallback if op["macs"]} == {"skipped layer"}
    assert sum(op["macs"] for op in fallback) == result.report["integrality"]["counts"]["float_macs"]


def test_harmful_qconfig_shows_low_layer_sqnr(tmp_path):
    """A global scale far too small clips every activation: the per-layer SQNR collapses where the
    clipping happens, while max calibration keeps every layer well above it."""
    model = models.small_cnn()
    calibration = models.random_calibration(model, 10, 0)
    good = quantize(tmp_path / "good", model, calibration, calibrate_mode="max", **INTEGRAL)
    bad = quantize(
        tmp_path / "bad", model, calibration, calibrate_mode="global_scale", global_scale=0.02, **INTEGRAL
    )
    good_layers = {layer["name"]: layer["sqnr_db"] for layer in good.report["accuracy"]["layers"]}
    bad_layers = {layer["name"]: layer["sqnr_db"] for layer in bad.report["accuracy"]["layers"]}
    assert min(good_layers.values()) > 15.0, good_layers
    assert min(bad_layers.values()) < 5.0, bad_layers
    assert bad.report["summary"]["sqnr_db"] < 5.0 < good.report["summary"]["sqnr_db"]


@pytest.mark.slow
@pytest.mark.chromium
def test_page_from_running_api_renders_in_chromium(chromium, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["STORAGE_DIR"] = str(tmp_path / "store")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        example = REPO / "examples" / "cnn"
        files = {
            "model": ("model.onnx", (example / "model.onnx").read_bytes()),
            "calibration": ("calibration.npz", (example / "calibration.npz").read_bytes()),
            "qconfig": (None, (example / "qconfig.json").read_text().replace("{", '{"bench_runs": 3, ', 1)),
        }
        job = httpx.post(f"{base}/quantize", files=files, timeout=30).json()
        state = _poll(f"{base}/jobs/{job['job_id']}")
        assert state["state"] == "succeeded", state
        url = f"{base}/jobs/{job['job_id']}/report.html"
        dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", url).stdout
        assert 'id="summary"' in dom and "Fully integral: yes" in dom
        assert re.search(r'<svg[^>]*id="sqnr-chart"', dom) and dom.count('<rect class="bar"') >= 5
        shot = tmp_path / "page.png"
        run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1800", url)
        assert shot.stat().st_size > 10_000
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
        log.close()


def _wait_ready(base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("tvmq serve did not become ready")


def _poll(url: str) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = httpx.get(url, timeout=10).json()
        if state["state"] in ("succeeded", "failed", "cancelled"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"job did not finish: {state}")


def test_simulation_report_is_never_integral(tmp_path):
    model = models.small_cnn()
    result = quantize(
        tmp_path,
        model,
        models.random_calibration(model, 10, 0),
        calibrate_mode="max",
        do_simulation=True,
        **INTEGRAL,
    )
    integrality = result.report["integrality"]
    assert integrality["fully_integral"] is False and result.report["summary"]["do_simulation"] is True
    assert {op["reason"] for op in integrality["ops"] if op["group"] == "core"} == {"simulation"}
    assert result.report["summary"]["cosine"] > 0.99
