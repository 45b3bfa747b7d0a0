"""The quantization error a threshold would cause, expected from a |x| histogram.

Every data-driven mode is judged by the same yardstick: the mean squared error of symmetric
quantization at threshold T (scale s = T / 2**(nbit-1), levels clipped to ±(2**(nbit-1) - 1), so
|x| above c = (2**(nbit-1) - 1) * s is clipped to c), rounding and clipping together. The values
inside one histogram bin are taken as spread evenly over it, which makes the expectation exact
per bin in closed form, for any T, whether a bin is wider or narrower than one quantization step:

  rounding, x uniform on [a, b) below c:  s**3 * (R(b / s) - R(a / s)) / (b - a)
  clipping, x uniform on [a, b) above c:  ((b - c)**3 - (a - c)**3) / (3 * (b - a))

with R(u) = integral over [0, u] of (t - round(t))**2 dt = m / 12 + (u - m)**3 / 3, m = floor(u + 1/2)
(each whole step contributes 1/12, the last part a cube). Exact zeros quantize exactly and add
nothing, but they count in the mean, so errors are per value seen.
"""

from __future__ import annotations

import numpy as np

from worker.quantize.calibration.histogram import AbsHistogram

#: (candidates x occupied bins) temporaries are built in chunks of about this many elements.
_CHUNK_ELEMENTS = 1 << 20


def _step_integral(u: np.ndarray) -> np.ndarray:
    """R(u): the integral of the squared rounding error over [0, u] in units of one step."""
    m = np.floor(u + 0.5)
    return m / 12.0 + _cube(u - m) / 3.0


def _cube(v: np.ndarray) -> np.ndarray:
    """v**3 by multiplication: numpy's float power is several times slower."""
    return v * v * v


class HistogramError:
    """Expected MSE and clipped share of thresholds on one histogram (its occupied bins only)."""

    def __init__(self, histogram: AbsHistogram, nbit: int, merge: int = 1) -> None:
        """`merge` adjacent bins are taken as one (a power of two): a coarser, cheaper estimate."""
        self.nbit = nbit
        self.total = histogram.total
        counts = histogram.counts.reshape(-1, merge).sum(axis=1) if merge > 1 else histogram.counts
        occupied = np.flatnonzero(counts)
        width = histogram.bin_width * merge
        self.counts = counts[occupied].astype(np.float64)
        self.low = occupied * width
        self.high = self.low + width
        self.peak = histogram.max
        # the top bin holds the max: values spread over [low, max], never beyond it
        if occupied.size:
            self.high[-1] = max(min(self.high[-1], histogram.max), self.low[-1] + width * 1e-6)
        #: mean of x**2 over all values (zeros included): the signal power of the SQNR estimate
        second_moment = (self.high**2 + self.high * self.low + self.low**2) / 3.0
        self.power = float(np.sum(self.counts * second_moment) / max(self.total, 1))

    def mse(self, thresholds: np.ndarray | float) -> np.ndarray:
        """Expected squared error per value seen, for each threshold (> 0)."""
        t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
        out = np.empty(t.size)
        if self.counts.size == 0:
            out[:] = 0.0
            return out
        chunk = max(1, _CHUNK_ELEMENTS // self.counts.size)
        a, b, h = self.low[None, :], self.high[None, :], self.counts[None, :]
        span = b - a
        for start in range(0, t.size, chunk):
            step = (t[start : start + chunk] / (1 << (self.nbit - 1)))[:, None]
            clip = step * ((1 << (self.nbit - 1)) - 1)
            top = np.minimum(b, clip)
            rounding = np.where(
                top > a, _cube(step) * (_step_integral(top / step) - _step_integral(a / step)), 0.0
            )
            bottom = np.maximum(a, clip)
            clipping = np.where(b > clip, (_cube(b - clip) - _cube(bottom - clip)) / 3.0, 0.0)
            out[start : start + chunk] = np.sum(h * (rounding + clipping) / span, axis=1)
        return out / max(self.total, 1)

    def clipped(self, threshold: float) -> float:
        """Share of all values seen whose |x| is above `threshold` (bins split evenly)."""
        if self.total == 0 or threshold >= self.peak:
            return 0.0
        above = np.clip((self.high - threshold) / (self.high - self.low), 0.0, 1.0)
        return float(np.sum(self.counts * above) / self.total)

    def sqnr_db(self, mse: float) -> float | None:
        """10 log10(E[x^2] / MSE); None when the quantization is exact (no error to compare)."""
        if mse <= 0.0 or self.power <= 0.0:
            return None
        return float(10.0 * np.log10(self.power / mse))
