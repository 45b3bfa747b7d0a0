"""magika 1.0.3 `standard_v3_3/model.onnx`: file-type classifier over 214 labels, int32 byte input.

Features (magika/magika.py, Magika._extract_features_from_seekable and _get_raw_predictions, with
config.min.json: beg_size 1024, end_size 1024, block_size 4096, padding_token 256): read at most
4096 bytes from the start and from the end, lstrip() the first block and rstrip() the last, take the
first 1024 / last 1024 bytes, pad with 256 (after the beginning, before the end); the input is the
2048 integers (1, 2048) int32. Files whose stripped start is shorter than min_file_size_for_dl (8)
are not given to the model, and neither are they here. Decoding: argmax over target_labels_space.
Inputs: real files of this machine, a fixed number per file kind, chosen with the corpus seed from
/usr/share, /usr/lib, /etc and the venv's site-packages. Metric: top-1 agreement with fp32.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.realmodels.corpus import CALIBRATION, EVALUATION, CorpusModel, Runner, Score, fraction, rng
from bench.realmodels.feeds import Feed
from bench.realmodels.wheels import Wheel

ROOTS = (Path("/usr/share"), Path("/usr/lib"), Path("/etc"), Path(sys.prefix) / "lib")
#: file kinds by name suffix: text, code, data, images, archives, binaries
SUFFIXES = (
    ".py",
    ".json",
    ".txt",
    ".md",
    ".html",
    ".css",
    ".js",
    ".xml",
    ".svg",
    ".png",
    ".gz",
    ".so",
    ".conf",
    ".sh",
    ".pyc",
    ".csv",
    ".toml",
    ".yaml",
    ".h",
    ".c",
    ".pem",
    ".ttf",
    ".zip",
    ".jpg",
    ".pdf",
    ".rst",
    ".ini",
    ".cfg",
    ".pl",
    ".mo",
    ".pyi",
    ".onnx",
    ".npz",
    ".whl",
    ".bz2",
    ".xz",
)
CONFIG = "magika/models/standard_v3_3/config.min.json"


def features(path: Path, config: dict[str, Any]) -> np.ndarray | None:
    """magika's v2 features of one file, or None when magika would not run its model on it."""
    size = path.stat().st_size
    block, beg_size, end_size, pad = (
        config["block_size"],
        config["beg_size"],
        config["end_size"],
        config["padding_token"],
    )
    with path.open("rb") as f:
        n = min(block, size)
        beg = f.read(n).lstrip()[:beg_size]
        f.seek(size - n)
        end = f.read(n).rstrip()
    end = end[len(end) - end_size :] if len(end) > end_size else end
    if size < config["min_file_size_for_dl"] or len(beg) < config["min_file_size_for_dl"]:
        return None
    ints = [*beg, *[pad] * (beg_size - len(beg)), *[pad] * (end_size - len(end)), *end]
    return np.array(ints, np.int32)[None]


def candidates() -> dict[str, list[Path]]:
    """Regular files (not symlinks) of each kind under ROOTS, sorted: walk order differs between
    file systems. os.scandir's entry types save a stat per file (the roots hold ~10^5 files)."""
    found: dict[str, list[Path]] = {s: [] for s in SUFFIXES}
    stack = [str(root) for root in ROOTS if root.is_dir()]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                bucket = found.get(os.path.splitext(entry.name)[1])
                if bucket is not None:
                    bucket.append(Path(entry.path))
    return {s: sorted(paths) for s, paths in found.items() if paths}


class Magika(CorpusModel):
    name = "magika"
    wheel = Wheel("magika", "1.0.3")
    onnx_member = "magika/models/standard_v3_3/model.onnx"
    search_metric = "top1_agreement"
    summary = (
        "real files of this machine (36 kinds by suffix, round robin; /usr/share, /usr/lib, /etc, venv); "
        "magika's 1024 begin + 1024 end bytes, stripped, padded with 256, int32; metric: top-1 agreement"
    )

    def __init__(self) -> None:
        self.config = json.loads(self.wheel.member(CONFIG).read_text())
        self.labels = self.config["target_labels_space"]
        self._split: dict[int, list[Feed]] | None = None
        self.files: dict[int, list[str]] = {}

    def _feeds(self, stream: int, count: int) -> list[Feed]:
        """Round robin over the kinds; within a kind a seeded shuffle deals files to evaluation and
        calibration in turn, and a content seen once is not used again. The dealing order does not
        depend on `count`, so the first n evaluation files are the same for any --samples."""
        if self._split is None or min(map(len, self._split.values())) < count:
            self._split, self.files = {EVALUATION: [], CALIBRATION: []}, {}
            seen: set[bytes] = set()
            kinds = candidates()
            orders = {
                s: list(rng(2, i).permutation(len(p))) for i, (s, p) in enumerate(sorted(kinds.items()))
            }
            while min(map(len, self._split.values())) < count and any(orders.values()):
                for suffix in sorted(kinds):
                    for target in (EVALUATION, CALIBRATION):
                        self._take(kinds[suffix], orders[suffix], target, seen)
        return self._split[stream][:count]

    def _take(self, paths: list[Path], order: list[int], target: int, seen: set[bytes]) -> None:
        while order:
            path = paths[order.pop(0)]
            try:
                x = features(path, self.config)
            except OSError:
                continue
            if x is not None and x.tobytes() not in seen:
                seen.add(x.tobytes())
                self._split[target].append({"bytes": x})  # type: ignore[index]
                self.files.setdefault(target, []).append(str(path))
                return

    def evaluation_cases(self, count: int) -> list[Feed]:
        return self._feeds(EVALUATION, count)

    def calibration_feeds(self, count: int, fp32: Runner) -> list[Feed]:
        return self._feeds(CALIBRATION, count)

    def decode(self, outputs: list[np.ndarray]) -> str:
        return self.labels[int(outputs[0][0].argmax())]

    def score(self, reference: list[Any], got: list[Any]) -> Score:
        return fraction(
            sum(a == b for a, b in zip(reference, got, strict=True)), len(reference), "top-1 agreement"
        )
