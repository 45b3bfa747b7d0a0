"""The search's metrics: how close a trial's outputs are to the float model's, on validation feeds.

Each metric reads one model output over every validation feed (the float outputs are the
reference) and gives one number where higher is better. The float model scores 1 against itself on
the agreement metrics and cosine; sqnr_db's loss is read as the noise-to-signal power ratio, so a
tolerable loss of 0.01 is 20 dB. numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from worker.qconfig import SearchConfig
from worker.report.metrics import SQNR_CAP_DB, ErrorAccumulator

__all__ = ["SQNR_CAP_DB", "meets", "score", "target"]


def _rows(out: np.ndarray) -> np.ndarray:
    """Class scores on the last axis, every other position a row (trailing 1-dims dropped first:
    (N, C, 1, 1) is N rows of C classes)."""
    shape = list(out.shape)
    while len(shape) > 1 and shape[-1] == 1:
        shape.pop()
    return out.reshape(-1, shape[-1]) if shape else out.reshape(1, 1)


def top1_agreement(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> float:
    """Share of rows (every position but the class axis, the last) whose argmax class agrees."""
    hits = rows = 0
    for ref, out in zip(refs, outs, strict=True):
        r, q = _rows(ref), _rows(out)
        hits += int(np.count_nonzero(r.argmax(axis=1) == q.argmax(axis=1)))
        rows += r.shape[0]
    return hits / rows if rows else 1.0


def ctc_strings(out: np.ndarray, batch_axis: int) -> list[tuple[int, ...]]:
    """Greedy CTC decoding without a charset: the class ids per sample after argmax over the last
    axis, repeats merged and the blank (0) dropped: what a recognizer prints, as ids."""
    ids = np.moveaxis(out.argmax(axis=-1), batch_axis, 0)
    strings = []
    for steps in ids.reshape(ids.shape[0], -1):
        merged = [int(c) for i, c in enumerate(steps) if (i == 0 or c != steps[i - 1]) and c != 0]
        strings.append(tuple(merged))
    return strings


def _batch_axis(shape: tuple[int, ...], batch: int) -> int:
    """(N, T, C) or (T, N, C): axis 0 unless only axis 1 has the feed's sample count."""
    if len(shape) >= 3 and shape[0] != batch and shape[1] == batch:
        return 1
    return 0


def ctc_string_agreement(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray], batch: int = 1) -> float:
    """Share of samples whose decoded string is identical to the float model's."""
    same = total = 0
    for ref, out in zip(refs, outs, strict=True):
        axis = _batch_axis(ref.shape, batch)
        for a, b in zip(ctc_strings(ref, axis), ctc_strings(out, axis), strict=True):
            same += a == b
            total += 1
    return same / total if total else 1.0


def _accumulate(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> ErrorAccumulator:
    acc = ErrorAccumulator()
    for ref, out in zip(refs, outs, strict=True):
        acc.update(ref, out)
    return acc


def cosine(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> float:
    return _accumulate(refs, outs).cosine


def sqnr_db(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> float:
    return _accumulate(refs, outs).sqnr_db


Scorer = Callable[[Sequence[np.ndarray], Sequence[np.ndarray], int], float]

SCORERS: dict[str, Scorer] = {
    "top1_agreement": lambda refs, outs, batch: top1_agreement(refs, outs),
    "cosine": lambda refs, outs, batch: cosine(refs, outs),
    "sqnr_db": lambda refs, outs, batch: sqnr_db(refs, outs),
    "ctc_string_agreement": ctc_string_agreement,
}


def score(spec: SearchConfig, refs: Sequence[np.ndarray], outs: Sequence[np.ndarray], batch: int) -> float:
    return SCORERS[spec.metric](refs, outs, batch)


def target(spec: SearchConfig) -> float:
    """The lowest metric value that meets the spec."""
    if spec.metric == "sqnr_db":
        return -10.0 * math.log10(spec.tolerable_loss)
    if spec.loss == "relative":
        return 1.0 * (1.0 - spec.tolerable_loss)
    return 1.0 - spec.tolerable_loss


def meets(spec: SearchConfig, value: float) -> bool:
    # a hair of tolerance: 0.99 computed as 99/100 must meet a 1 % relative loss
    return value >= target(spec) - 1e-9
