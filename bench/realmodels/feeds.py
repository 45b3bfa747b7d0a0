"""Calibration files in the shared contract, written once and read by every engine of a run.

Batch-stacked: keys are input names, arrays stack the feeds on axis 0 (every feed has batch 1).
Per-sample: keys are "<k>/<input name>", each array one feed exactly as the model takes it; this is
the layout for scalars (silero's `sr`) and state tensors whose batch axis is not 0.
Every input keeps its own dtype (int32 bytes, int64 sample rate): the file says what the model takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Feed = dict[str, np.ndarray]


def write_calibration(path: Path, feeds: list[Feed], per_sample: bool) -> Path:
    if not feeds:
        raise ValueError("no calibration feeds")
    if per_sample:
        arrays = {f"{k}/{name}": value for k, feed in enumerate(feeds) for name, value in feed.items()}
    else:
        arrays = {name: np.concatenate([feed[name] for feed in feeds], axis=0) for name in feeds[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def read_calibration(path: Path) -> list[Feed]:
    """The feeds of a file in either layout, one dict per feed (batch-stacked: split on axis 0)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    if all(key.split("/", 1)[0].isdigit() and "/" in key for key in arrays):
        feeds: dict[int, Feed] = {}
        for key, value in arrays.items():
            k, name = key.split("/", 1)
            feeds.setdefault(int(k), {})[name] = value
        return [feeds[k] for k in sorted(feeds)]
    count = len(next(iter(arrays.values())))
    return [{name: value[i : i + 1] for name, value in arrays.items()} for i in range(count)]
