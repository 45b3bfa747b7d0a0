"""Runs a script that needs a Docker engine (scripts/compose-smoke, scripts/fresh-machine) as a test.

They take minutes, so they run where they are asked for: in CI (CI=true) or with TVMQ_DOCKER=1;
TVMQ_DOCKER=0 turns them off. A script that cannot run Docker on this machine exits 77 after saying
why; the test is then skipped with that reason, printed in the summary with the script's timings.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CANNOT_RUN = 77  # the scripts' exit status when no Docker engine can run here
TIMEOUT = 20 * 60


def _wanted() -> tuple[bool, str]:
    choice = os.environ.get("TVMQ_DOCKER", "")
    if choice == "0":
        return False, "TVMQ_DOCKER=0"
    if choice == "1" or os.environ.get("CI") == "true":
        return True, ""
    return False, "runs in CI (CI=true) or with TVMQ_DOCKER=1; takes minutes"


def run_docker_script(name: str, report: list[str]) -> None:
    """Runs scripts/<name>; fails with its last output unless it passed, skips when it cannot run."""
    wanted, why = _wanted()
    if not wanted:
        report.append(f"{name} not run: {why}")
        pytest.skip(why)
    proc = subprocess.run(
        [str(ROOT / "scripts" / name)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )
    lines = proc.stdout.splitlines()
    if proc.returncode == CANNOT_RUN:
        reason = next((line for line in reversed(lines) if "SKIPPED" in line), "Docker cannot run here")
        report.append(f"{name} not run: {reason}")
        pytest.skip(reason)
    if f"{name} timings:" in lines:
        report.extend(lines[lines.index(f"{name} timings:") :])
    assert proc.returncode == 0, f"scripts/{name} failed; its last output:\n" + "\n".join(lines[-80:])
