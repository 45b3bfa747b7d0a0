"""The streaming |x| histogram: exact re-binning when the range grows, percentile accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from worker.errors import CalibrationError
from worker.quantize.calibration.histogram import AbsHistogram, abs_max


def dyadic_batch(rng: np.random.Generator, size: int, top: int) -> np.ndarray:
    """Signed values (k + 0.5) / 128 for k < top, plus zeros: never on a bin edge of any range used."""
    values = (rng.integers(0, top, size) + 0.5) / 128.0
    values *= rng.choice([-1.0, 1.0], size)
    values[rng.random(size) < 0.1] = 0.0
    return values.astype(np.float32)


def test_growing_range_rebins_exactly() -> None:
    rng = np.random.default_rng(3)
    hist = AbsHistogram(64)
    first = dyadic_batch(rng, 1000, 127)
    first[0] = 1.0  # on a bin edge of every range: must land above it, not in the top bin
    batches = [first, dyadic_batch(rng, 1000, 300), dyadic_batch(rng, 1000, 100), dyadic_batch(rng, 500, 900)]
    for batch in batches:
        hist.add(batch)
    seen = np.abs(np.concatenate(batches))
    assert hist.upper == 8.0  # 2 (max 1.0) -> 4 (max 2.34) -> 8 (max 7.03)
    assert hist.max == seen.max()
    assert hist.zeros == np.count_nonzero(seen == 0)
    expected, _ = np.histogram(seen[seen > 0], bins=64, range=(0.0, 8.0))
    np.testing.assert_array_equal(hist.counts, expected)


def test_range_jump_wider_than_all_bins_keeps_every_count() -> None:
    hist = AbsHistogram(16)
    hist.add(np.array([1e-3, -2e-3, 0.0], np.float32))
    hist.add(np.array([1e3, 5.0], np.float32))
    assert hist.total == 5
    assert hist.counts[0] == 3 and hist.zeros == 1  # 5.0 shares bin 0 of [0, 1024)
    assert hist.max < hist.upper <= 2 * hist.max


@pytest.mark.parametrize("dist", ["uniform", "gaussian"])
def test_percentile_matches_numpy_on_growing_batches(dist: str) -> None:
    rng = np.random.default_rng(7)
    batches = []
    for k in range(12):
        spread = 0.2 + 0.3 * k  # every batch widens the range: many re-binnings
        sample = rng.uniform(-1, 1, 20_000) if dist == "uniform" else rng.standard_normal(20_000)
        batches.append((sample * spread).astype(np.float32))
    hist = AbsHistogram(1 << 15)
    for batch in batches:
        hist.add(batch)
    seen = np.abs(np.concatenate(batches))
    tolerance = hist.bin_width
    for q in (10.0, 50.0, 90.0, 99.0, 99.9, 99.999):
        assert abs(hist.percentile(q) - np.percentile(seen, q)) <= tolerance, q
    assert hist.percentile(100.0) == seen.max()


def test_percentile_counts_zeros_as_smallest_values() -> None:
    hist = AbsHistogram(256)
    hist.add(np.concatenate([np.zeros(900, np.float32), np.linspace(1.0, 2.0, 100, dtype=np.float32)]))
    assert hist.percentile(50.0) == 0.0
    assert hist.percentile(95.0) == pytest.approx(
        np.percentile(np.r_[np.zeros(900), np.linspace(1, 2, 100)], 95.0), abs=hist.bin_width
    )


def test_state_size_is_constant() -> None:
    rng = np.random.default_rng(0)
    hist = AbsHistogram(1024)
    hist.add(rng.standard_normal(1000).astype(np.float32))
    size = hist.counts.nbytes
    for k in range(50):
        hist.add((rng.standard_normal(1000) * (k + 1)).astype(np.float32))
    assert hist.counts.nbytes == size and hist.counts.shape == (1024,)
    assert hist.total == 51_000


def test_non_finite_values_are_refused() -> None:
    with pytest.raises(CalibrationError):
        abs_max(np.array([1.0, np.nan], np.float32))
    with pytest.raises(CalibrationError):
        AbsHistogram(8).add(np.array([-np.inf], np.float32))
    assert abs_max(np.zeros((0, 3), np.float32)) == 0.0


def test_bin_count_must_be_power_of_two() -> None:
    with pytest.raises(ValueError):
        AbsHistogram(1000)
