"""Float-vs-quantized error metrics, one-shot and streaming, for the accuracy section of the report.

Held-out sets and per-layer activations can be large, so the accumulator keeps only running sums
(dot product, sums of squares, absolute error, top-1 hits) and never the tensors themselves. The
one-shot functions and the accumulator finish with the same `_cosine_from_sums` / `_sqnr_from_sums`,
so batching cannot change a result beyond float rounding.

Conventions, chosen so that every value fits in JSON:
- SQNR is 10·log10(Σref² / Σ(ref−q)²) in dB, clamped to ±SQNR_CAP_DB. An exact match (zero noise)
  would be +inf and is reported as +SQNR_CAP_DB; a zero reference with non-zero noise is −SQNR_CAP_DB.
- Cosine of two all-zero tensors is 1.0 (identical); of one all-zero and one non-zero tensor, 0.0.
- Elements where either side is NaN or ±inf are counted in `nonfinite` and left out of every other
  metric, so one NaN does not turn the whole report into NaN (which JSON cannot carry either).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from worker.report.schema import LayerAccuracy, OutputAccuracy

#: The stand-in for an infinite SQNR (exact match). 200 dB is far above any real int8 result (~50 dB).
SQNR_CAP_DB = 200.0


def looks_like_class_scores(shape: Sequence[int]) -> bool:
    """(N, C) or (N, C, 1, 1) with C ≥ 2: an output whose argmax over C is a predicted class."""
    shape = tuple(shape)
    if len(shape) == 4 and shape[2:] == (1, 1):
        shape = shape[:2]
    return len(shape) == 2 and shape[1] >= 2


def _cosine_from_sums(dot: float, ref_sq: float, q_sq: float) -> float:
    if ref_sq == 0.0 and q_sq == 0.0:
        return 1.0
    if ref_sq == 0.0 or q_sq == 0.0:
        return 0.0
    return float(np.clip(dot / math.sqrt(ref_sq * q_sq), -1.0, 1.0))


def _sqnr_from_sums(signal: float, noise: float) -> float:
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return float(np.clip(10.0 * math.log10(signal / noise), -SQNR_CAP_DB, SQNR_CAP_DB))


def _finite_pair(ref: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Both arrays flattened to float64 on the positions where both are finite, and how many were not."""
    ref = np.asarray(ref)
    q = np.asarray(q)
    if ref.shape != q.shape:
        raise ValueError(f"float output shape {ref.shape} != quantized output shape {q.shape}")
    ref = ref.astype(np.float64, copy=False).ravel()
    q = q.astype(np.float64, copy=False).ravel()
    finite = np.isfinite(ref) & np.isfinite(q)
    nonfinite = int(finite.size - np.count_nonzero(finite))
    if nonfinite:
        return ref[finite], q[finite], nonfinite
    return ref, q, 0


def _top1_hits(ref: np.ndarray, q: np.ndarray) -> tuple[int, int]:
    """(rows whose argmax agrees, rows) for class-score shaped outputs."""
    rows = ref.shape[0]
    ref2 = np.asarray(ref).reshape(rows, -1)
    q2 = np.asarray(q).reshape(rows, -1)
    return int(np.count_nonzero(ref2.argmax(axis=1) == q2.argmax(axis=1))), rows


def cosine(ref: np.ndarray, q: np.ndarray) -> float:
    r, x, _ = _finite_pair(ref, q)
    return _cosine_from_sums(float(r @ x), float(r @ r), float(x @ x))


def sqnr_db(ref: np.ndarray, q: np.ndarray) -> float:
    r, x, _ = _finite_pair(ref, q)
    err = r - x
    return _sqnr_from_sums(float(r @ r), float(err @ err))


def max_abs_error(ref: np.ndarray, q: np.ndarray) -> float:
    r, x, _ = _finite_pair(ref, q)
    return float(np.max(np.abs(r - x))) if r.size else 0.0


def mean_abs_error(ref: np.ndarray, q: np.ndarray) -> float:
    r, x, _ = _finite_pair(ref, q)
    return float(np.mean(np.abs(r - x))) if r.size else 0.0


def top1_agreement(ref: np.ndarray, q: np.ndarray) -> float | None:
    """Fraction of rows with the same argmax class, or None when the output is not class scores."""
    if np.shape(ref) != np.shape(q):
        raise ValueError(f"float output shape {np.shape(ref)} != quantized output shape {np.shape(q)}")
    if not looks_like_class_scores(np.shape(ref)):
        return None
    hits, rows = _top1_hits(ref, q)
    return hits / rows if rows else None


class ErrorAccumulator:
    """Running float-vs-quantized statistics over batches of one output (or one layer's tensor).

    Top-1 agreement is reported only if every batch was class-score shaped.
    """

    def __init__(self) -> None:
        self.dot = 0.0
        self.ref_sq = 0.0
        self.q_sq = 0.0
        self.noise = 0.0
        self.abs_sum = 0.0
        self.abs_max = 0.0
        self.count = 0
        self.nonfinite = 0
        self.top1_hits = 0
        self.top1_rows = 0
        self._class_scores = True

    def update(self, ref: np.ndarray, q: np.ndarray) -> None:
        r, x, nonfinite = _finite_pair(ref, q)
        err = r - x
        abs_err = np.abs(err)
        self.dot += float(r @ x)
        self.ref_sq += float(r @ r)
        self.q_sq += float(x @ x)
        self.noise += float(err @ err)
        self.abs_sum += float(abs_err.sum())
        if abs_err.size:
            self.abs_max = max(self.abs_max, float(abs_err.max()))
        self.count += r.size
        self.nonfinite += nonfinite
        if self._class_scores and looks_like_class_scores(np.shape(ref)):
            hits, rows = _top1_hits(ref, q)
            self.top1_hits += hits
            self.top1_rows += rows
        else:
            self._class_scores = False

    @property
    def cosine(self) -> float:
        return _cosine_from_sums(self.dot, self.ref_sq, self.q_sq)

    @property
    def sqnr_db(self) -> float:
        return _sqnr_from_sums(self.ref_sq, self.noise)

    @property
    def mean_abs_error(self) -> float:
        return self.abs_sum / self.count if self.count else 0.0

    @property
    def top1_agreement(self) -> float | None:
        if not self._class_scores or not self.top1_rows:
            return None
        return self.top1_hits / self.top1_rows

    def output_accuracy(self, name: str) -> OutputAccuracy:
        return OutputAccuracy(
            name=name,
            cosine=self.cosine,
            sqnr_db=self.sqnr_db,
            max_abs_error=self.abs_max,
            mean_abs_error=self.mean_abs_error,
            top1_agreement=self.top1_agreement,
            nonfinite=self.nonfinite,
        )

    def layer_accuracy(self, name: str, op: str) -> LayerAccuracy:
        return LayerAccuracy(name=name, op=op, sqnr_db=self.sqnr_db, cosine=self.cosine)
