"""Entropy calibration: the vectorized divergences against a per-candidate reference, and the
thresholds it picks on distributions whose good threshold is known."""

from __future__ import annotations

import numpy as np
import pytest

from worker.quantize.calibration import make_collector
from worker.quantize.calibration.kl import best_stop, kl_divergences


def reference_divergence(counts: np.ndarray, levels: int, stop: int) -> float:
    """KL(P || Q) for one candidate, building P and Q explicitly as TensorRT describes them."""
    h = counts.astype(np.float64)
    p = h[:stop].copy()
    p[-1] += h[stop:].sum()
    starts = np.arange(levels + 1) * stop // levels  # group j holds bins [starts[j], starts[j + 1])
    group = np.searchsorted(starts, np.arange(stop), side="right") - 1
    group_sum = np.bincount(group, weights=h[:stop], minlength=levels)
    group_used = np.bincount(group, weights=p > 0, minlength=levels)
    q = np.where(p > 0, group_sum[group] / np.maximum(group_used[group], 1), 0.0)
    if q.sum() == 0:
        return np.inf
    p, q = p / p.sum(), q / q.sum()
    support = p > 0
    if np.any(q[support] == 0):
        return np.inf
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def gaussian_counts(rng: np.random.Generator, bins: int) -> np.ndarray:
    sample = np.abs(rng.standard_normal(200_000))
    sample[:5] = 9.0  # far outliers: the range is twice what the bulk needs
    counts, _ = np.histogram(sample, bins=bins, range=(0.0, 10.0))
    return counts


@pytest.mark.parametrize(
    ("name", "levels"),
    [("gaussian", 16), ("gaussian", 7), ("sparse", 16), ("spiky", 8)],
)
def test_vectorized_divergences_equal_reference(name: str, levels: int) -> None:
    rng = np.random.default_rng(11)
    if name == "gaussian":
        counts = gaussian_counts(rng, 256)
    elif name == "sparse":  # most bins empty: exercises the zero-q (infinite) candidates
        counts = np.where(rng.random(300) < 0.15, rng.integers(1, 50, 300), 0)
    else:  # one huge bin at the end, like a clipped activation
        counts = rng.integers(0, 20, 120)
        counts[-1] = 5000
    stops = np.arange(1, counts.size + 1)
    fast = kl_divergences(counts, levels, stops)
    slow = np.array([reference_divergence(counts, levels, int(i)) for i in stops])
    assert np.array_equal(np.isinf(fast), np.isinf(slow))
    finite = np.isfinite(slow)
    assert finite.sum() > 10
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-9, atol=1e-12)


def test_best_stop_is_the_reference_argmin() -> None:
    counts = gaussian_counts(np.random.default_rng(5), 4096)
    occupied = int(np.flatnonzero(counts)[-1]) + 1
    stops = np.arange(128, occupied + 1)
    slow = [reference_divergence(counts, 128, int(i)) for i in stops]
    assert best_stop(counts, 128) == stops[int(np.argmin(slow))]


def stream(mode: str, batches: list[np.ndarray], **kwargs: float) -> float:
    collector = make_collector(mode, **kwargs)
    for batch in batches:
        collector.update(batch)
    assert collector.samples == len(batches)
    return collector.threshold()


def test_gaussian_with_outliers_clips_the_outliers() -> None:
    rng = np.random.default_rng(2)
    sigma = 0.5
    batches = [(rng.standard_normal((4, 16, 32, 32)) * sigma).astype(np.float32) for _ in range(8)]
    batches[3].flat[:6] = 15.0 * sigma  # a few outliers at 15 sigma arrive mid-stream
    batches[6].flat[:2] = -30.0 * sigma
    threshold = stream("kl_divergence", batches)
    assert 2.5 * sigma <= threshold <= 5.0 * sigma
    assert threshold < stream("max", batches) / 4


def test_uniform_keeps_nearly_the_whole_range() -> None:
    rng = np.random.default_rng(4)
    batches = [rng.uniform(-3.0, 3.0, 100_000).astype(np.float32) for _ in range(5)]
    peak = max(float(np.abs(b).max()) for b in batches)
    assert 0.98 * peak <= stream("kl_divergence", batches) <= peak


def test_fewer_bits_clip_more() -> None:
    rng = np.random.default_rng(6)
    batches = [rng.standard_normal(200_000).astype(np.float32) for _ in range(3)]
    thresholds = [stream("kl_divergence", batches, nbit=nbit) for nbit in (3, 5, 8)]
    assert thresholds[0] < thresholds[1] < thresholds[2]


def test_exact_zeros_do_not_pull_the_threshold_down() -> None:
    """A ReLU output: half zeros. Zero is exact at any scale, so the choice must not change."""
    rng = np.random.default_rng(8)
    positive = np.abs(rng.standard_normal(300_000)).astype(np.float32)
    relu = np.concatenate([positive, np.zeros(300_000, np.float32)])
    assert stream("kl_divergence", [relu]) == stream("kl_divergence", [positive])


def test_streaming_order_does_not_change_the_threshold() -> None:
    """The range is the power of two above the max, so any batching gives the same histogram."""
    rng = np.random.default_rng(9)
    data = (rng.standard_normal(240_000) * np.repeat([0.1, 1.0, 0.3, 2.0], 60_000)).astype(np.float32)
    one_shot = stream("kl_divergence", [data])
    assert stream("kl_divergence", np.array_split(data, 12)) == one_shot
    assert stream("kl_divergence", np.array_split(data[::-1], 7)) == one_shot
