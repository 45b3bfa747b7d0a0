"""A fixed-size streaming histogram of |x| whose range grows by exact power-of-two merges.

Calibration sees an unknown number of batches and the range of a tensor is unknown until the last
one, so the histogram covers [0, the power of two just above the largest |x| so far) and doubles
that range (merging aligned runs of bins, which loses nothing) whenever a larger value arrives.
Memory is `num_bins` counters, whatever the number of batches; the final counts do not depend on
how the data was split into batches or in which order they came.

The range is always the power of two just above max|x| (max|x| < upper <= 2 * max|x|), so one bin
is at most 2 * max|x| / num_bins wide and every value lands in its exact bin (scaling by a power of
two is exact in float32); a statistic read from the histogram is off by less than one bin width.
"""

from __future__ import annotations

import math

import numpy as np

from worker.errors import CalibrationError

#: Values binned per step: the temporaries stay in the CPU cache (a third faster on 6 M values).
_CHUNK = 1 << 16

#: A first range below this is raised to it: |x| * num_bins / upper must stay finite in float32.
MIN_UPPER = 2.0**-100


def abs_max(x: np.ndarray) -> float:
    """max |x| of one batch (0.0 for an empty one), refusing NaN/inf that would poison thresholds."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return 0.0
    peak = float(max(x.max(), -x.min()))
    if not math.isfinite(peak):
        raise CalibrationError(
            "the float model produced NaN or infinite values on the calibration data; "
            "check the calibration inputs (scaling, dtype) and that the float model runs correctly",
            reason="non-finite activation",
        )
    return peak


class AbsHistogram:
    """Counts of the non-zero |x| over [0, upper) in `num_bins` equal bins; exact zeros apart.

    Zeros are counted separately because both users want them apart: the percentile counts them as
    the smallest values, the KL search ignores them (zero is exact at every scale, so it says
    nothing about where to clip).
    """

    def __init__(self, num_bins: int) -> None:
        if num_bins < 2 or num_bins & (num_bins - 1):
            raise ValueError(f"num_bins must be a power of two >= 2, got {num_bins}")
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.upper = 0.0  # 0 until the first non-zero value, then a power of two
        self.max = 0.0
        self.zeros = 0

    @property
    def num_bins(self) -> int:
        return self.counts.size

    @property
    def bin_width(self) -> float:
        return self.upper / self.num_bins

    @property
    def total(self) -> int:
        """Number of values seen, zeros included."""
        return self.zeros + int(self.counts.sum())

    def add(self, x: np.ndarray) -> None:
        """Count one batch: a max pass, a zero count, then cache-sized chunks binned in place."""
        x = np.asarray(x, dtype=np.float32)
        peak = abs_max(x)
        zeros = x.size - int(np.count_nonzero(x))
        self.zeros += zeros
        if peak == 0.0:
            return
        self.max = max(self.max, peak)
        self._cover(peak)
        factor = np.float32(self.num_bins / self.upper)  # exact: a power of two; every |x| < upper
        flat = x.ravel()
        buffer = np.empty(min(flat.size, _CHUNK), np.float32)
        for start in range(0, flat.size, _CHUNK):
            mags = buffer[: min(_CHUNK, flat.size - start)]
            np.abs(flat[start : start + _CHUNK], out=mags)
            mags *= factor
            self.counts += np.bincount(mags.astype(np.intp), minlength=self.num_bins)
        self.counts[0] -= zeros

    def _cover(self, peak: float) -> None:
        """Grow the range to the power of two just above `peak`, merging 2**k old bins into each.

        Powers of two keep re-binning aligned and make `|x| * num_bins / upper` exact in float32.
        """
        upper = math.ldexp(1.0, math.frexp(max(peak, MIN_UPPER))[1])
        if upper <= self.upper:
            return
        if self.upper > 0.0:
            factor = min(round(upper / self.upper), self.num_bins)
            merged = np.zeros_like(self.counts)
            merged[: self.num_bins // factor] = self.counts.reshape(-1, factor).sum(axis=1)
            self.counts = merged
        self.upper = upper

    def _order_statistic(self, index: int, cumulative: np.ndarray) -> float:
        """The index-th smallest |x| (0-based): exact for zeros and the max, else within its bin."""
        if index < self.zeros:
            return 0.0
        if index == cumulative[-1] - 1:
            return self.max
        b = int(np.searchsorted(cumulative, index, side="right"))
        inside = index - (cumulative[b] - self.counts[b])
        return min(float((b + (inside + 0.5) / self.counts[b]) * self.bin_width), self.max)

    def percentile(self, q: float) -> float:
        """The q-th percentile of all |x| seen, numpy's linear definition, within one bin width.

        Both order statistics numpy interpolates between are estimated inside their true bin
        (values evenly spread over it), so their interpolation is off by less than a bin width.
        """
        total = self.total
        if total == 0:
            raise ValueError("percentile of an empty histogram")
        rank = q / 100.0 * (total - 1)
        below = math.floor(rank)
        cumulative = self.zeros + np.cumsum(self.counts)
        low = self._order_statistic(below, cumulative)
        if below == total - 1:
            return low
        high = self._order_statistic(below + 1, cumulative)
        return low + (rank - below) * (high - low)
