"""Entropy calibration (TensorRT / MXNet / Relay `_kl_scale` style), vectorized over candidates.

For a histogram of |x| with bins h[0..B) and a candidate that keeps the first i bins:
  P_i = h[:i] with every clipped count (sum h[i:]) added to its last bin: what clipping keeps;
  Q_i = h[:i] merged into `levels` equal groups (one per quantization step), each group's mass
        spread evenly over the bins where P_i is non-zero, clipped mass left out: what the
        quantized tensor can represent.
The threshold is the candidate minimizing KL(P_i || Q_i), both normalized. Leaving the clipped mass
out of Q is what makes clipping cost something; the merging is what makes a wide range cost
something. Unlike MXNet we do not add an epsilon: a candidate whose Q is zero where P is not has an
infinite divergence, which only ever loses the argmin (the widest candidate is always finite).

Group j of candidate i holds bins [floor(j*i/levels), floor((j+1)*i/levels)).

Vectorization: with G_j the group sums, n_j the non-zero bins per group, M_j the P mass per group
(G_j, plus the clipped mass for the last group), N the total count and S_i = sum h[:i],
  KL_i = (sum_k P_k log P_k - sum_j M_j log(G_j / n_j)) / N - log N + log S_i,
and every sum is a difference of prefix sums taken at the group edges: O(levels) array work per
candidate, no per-bin Python loop.
"""

from __future__ import annotations

import numpy as np

#: Candidates are processed in chunks so the (candidates x levels) temporaries stay ~16 MB each.
_CHUNK_ELEMENTS = 1 << 21


def _xlogx(v: np.ndarray) -> np.ndarray:
    """v * log(v) with 0 log 0 = 0."""
    safe = np.where(v > 0, v, 1.0)
    return v * np.log(safe)


def kl_divergences(counts: np.ndarray, levels: int, stops: np.ndarray) -> np.ndarray:
    """KL(P_i || Q_i) for each candidate i in `stops` (bins kept, 1 <= i <= len(counts))."""
    h = np.asarray(counts, dtype=np.float64)
    total = h.sum()
    prefix = np.concatenate(([0.0], np.cumsum(h)))
    prefix_nonzero = np.concatenate(([0], np.cumsum(h > 0)))
    prefix_xlogx = np.concatenate(([0.0], np.cumsum(_xlogx(h))))
    steps = np.arange(levels + 1, dtype=np.int64)
    stops = np.asarray(stops, dtype=np.int64)
    out = np.empty(stops.size)
    chunk = max(1, _CHUNK_ELEMENTS // (levels + 1))
    for start in range(0, stops.size, chunk):
        i = stops[start : start + chunk]
        kept = prefix[i]
        clipped = total - kept
        last = h[i - 1]
        edges = (steps[None, :] * i[:, None]) // levels
        groups = np.diff(prefix[edges], axis=1)
        nonzero = np.diff(prefix_nonzero[edges], axis=1)
        nonzero[:, -1] += (last == 0) & (clipped > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_q = np.log(groups / nonzero)
            cross = np.where(groups > 0, groups * log_q, 0.0).sum(axis=1)
            cross += np.where(clipped > 0, clipped * log_q[:, -1], 0.0)
            plogp = prefix_xlogx[i - 1] + _xlogx(last + clipped)
            kl = (plogp - cross) / total - np.log(total) + np.log(kept)
        out[start : start + chunk] = np.where(kept > 0, kl, np.inf)
    return out


#: Candidates keep at least this share of the non-zero values: the bulk is never clipped.
KL_MIN_KEPT = 0.99


def best_stop(counts: np.ndarray, levels: int) -> int:
    """Number of bins to keep (threshold = stop * bin width) minimizing the divergence.

    Candidates run from the first stop that keeps `KL_MIN_KEPT` of the values (and at least
    `levels` bins, fewer would not even fill the integer range) up to the last non-empty bin; ties
    go to the smaller threshold. `counts` must have a non-zero entry.

    Why the floor: the divergence compares shapes, each side normalized. When a tensor's |x| never
    comes near zero (a gate in [0.2, 1], raw pixels, a shifted input) a stop just above the smallest
    |x| keeps a few bins that all fall in the last quantization level; P (the clipped mass piled on
    the last bin) and Q (that level spread over its non-empty bins) are then the same near-delta and
    the divergence is ~0, a tie with the full range that the smaller threshold wins: 60-100 % of the
    values clipped. A stop that keeps the bulk cannot make P a delta.
    """
    occupied = int(np.flatnonzero(counts)[-1]) + 1
    cumulative = np.cumsum(counts)
    bulk = int(np.searchsorted(cumulative, KL_MIN_KEPT * cumulative[-1], side="left")) + 1
    stops = np.arange(min(max(levels, bulk), occupied), occupied + 1)
    return int(stops[np.argmin(kl_divergences(counts, levels, stops))])
