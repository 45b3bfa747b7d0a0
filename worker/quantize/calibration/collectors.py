"""Streaming per-tensor statistics that pick an activation's quantization threshold.

Convention shared with realize: symmetric quantization, zero point 0; the threshold T is the |x|
mapped to the top of the integer range, scale = T / 2**(nbit-1), values clipped to
±(2**(nbit-1) - 1). The calibrate pass makes one collector per quantized tensor and calls
`update` once per batch; every collector keeps a fixed amount of state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from worker.errors import CalibrationError, QConfigError
from worker.quantize.calibration.error import HistogramError
from worker.quantize.calibration.histogram import AbsHistogram
from worker.quantize.calibration.kl import best_stop

MODES = ("global_scale", "max", "percentile", "kl_divergence", "mse")

#: Threshold of a tensor that was exactly zero on every calibration batch. Zero is exact at any
#: scale, so any value is correct; 1.0 keeps the requantize multipliers and int32 biases of the
#: neighbouring ops in their ordinary range, where a tiny value could overflow them.
ZERO_TENSOR_THRESHOLD = 1.0

#: Bins of the percentile histogram: the estimate is within 2 * max|x| / 32768 of the exact one.
PERCENTILE_BINS = 1 << 15

#: Bins of the KL histogram per quantization level: 4096 at 8 bits (TensorRT uses 2048). The data
#: fills more than the lower half of the range (max|x| > upper / 2), so the widest candidate still
#: merges >= 16 bins per level. Wider integers search at `KL_SEARCH_NBIT` levels (the
#: (candidates x levels) search grows with the levels; the safety check measures the real width).
KL_BINS_PER_LEVEL = 32
KL_SEARCH_NBIT = 8

#: Bins of the max and mse histograms: at the max threshold one 8-bit step spans >= 16 bins.
ERROR_BINS = 1 << 12

#: The safety bound: a mode's threshold whose expected MSE exceeds max's by more than this factor
#: is replaced by max's, and the choice says so. 1.0: no tensor is ever worse than max in expected
#: error. At 1.25 (about 1 dB per tensor) kl_divergence lost ddddocr's detector: 190 tensors each a
#: little worse than max added up to 22/36 identical box sets against max's 26/36 (7/12 vs 9/12 at
#: 12 samples); at 1.0 it keeps 10/12 (box F1 0.975, max's 0.947).
SAFE_MSE_RATIO = 1.0

#: mse search: thresholds from max|x| down to max|x| / 2**MSE_OCTAVES, MSE_STEPS per octave, on
#: bins merged by MSE_SWEEP_MERGE; then MSE_REFINE thresholds at full resolution within one sweep
#: step of the best one (and the no-clipping threshold, always).
MSE_OCTAVES = 11
MSE_STEPS = 8
MSE_SWEEP_MERGE = 8
MSE_REFINE = 49


@dataclass(frozen=True)
class Choice:
    """One tensor's threshold and what it costs, as the report shows it.

    `method` is the mode that chose the threshold, "max (fallback from <mode>)" when the safety
    bound replaced the mode's own choice. `clipped` is the share of the values seen above the
    threshold; `mse_vs_max` the histogram-expected MSE relative to max's (< 1: better than max);
    `sqnr_db` the expected signal-to-quantization-noise ratio. None where no data was seen.
    """

    threshold: float
    method: str
    clipped: float | None = None
    mse_vs_max: float | None = None
    sqnr_db: float | None = None


@runtime_checkable
class Collector(Protocol):
    """What the calibrate pass needs from a statistic: feed batches, then read the choice."""

    samples: int
    method: str

    def update(self, x: np.ndarray) -> None: ...

    def choice(self) -> Choice: ...

    def threshold(self) -> float: ...


class GlobalScaleCollector:
    """Relay's default: one fixed threshold for every tensor, no data needed."""

    method = "global_scale"

    def __init__(self, global_scale: float) -> None:
        self.global_scale = global_scale
        self.samples = 0

    def update(self, x: np.ndarray) -> None:
        self.samples += 1

    def choice(self) -> Choice:
        return Choice(self.global_scale, self.method)

    def threshold(self) -> float:
        return self.global_scale


class _HistogramCollector:
    """Collectors that read their threshold off a streaming |x| histogram (fixed-size state).

    Every one of them also measures its choice against max's on that histogram and keeps max's
    when its own is worse by more than `SAFE_MSE_RATIO`: no mode can collapse a tensor.
    """

    method = ""

    def __init__(self, bins: int, nbit: int) -> None:
        self.histogram = AbsHistogram(bins)
        self.nbit = nbit
        self.samples = 0

    def update(self, x: np.ndarray) -> None:
        self.histogram.add(x)
        self.samples += 1

    def choice(self) -> Choice:
        if self.samples == 0:
            raise CalibrationError(
                f"{self.method} calibration needs at least one calibration batch, got none; "
                "pass calibration data with at least one sample per input",
                reason="no batches",
            )
        if self.histogram.max == 0.0:
            return Choice(ZERO_TENSOR_THRESHOLD, self.method, 0.0, 1.0, None)
        errors = HistogramError(self.histogram, self.nbit)
        own = self.own_threshold()
        peak = self.histogram.max
        own_mse, max_mse = (float(e) for e in errors.mse(np.array([own, peak])))
        threshold, method, mse = own, self.method, own_mse
        if own_mse > SAFE_MSE_RATIO * max_mse:
            threshold, method, mse = peak, f"max (fallback from {self.method})", max_mse
        ratio = mse / max_mse if max_mse > 0.0 else 1.0
        return Choice(threshold, method, errors.clipped(threshold), ratio, errors.sqnr_db(mse))

    def threshold(self) -> float:
        return self.choice().threshold

    def own_threshold(self) -> float:
        """The mode's own statistic, before the safety check (needs a non-zero histogram)."""
        raise NotImplementedError


class MaxCollector(_HistogramCollector):
    """max |x| over every batch: never clips a calibration value, so outliers set the resolution.

    The threshold is the exact running max; the histogram is there for the report's error figures.
    """

    method = "max"

    def __init__(self, nbit: int) -> None:
        super().__init__(ERROR_BINS, nbit)

    def own_threshold(self) -> float:
        return self.histogram.max


class PercentileCollector(_HistogramCollector):
    """The given percentile of |x| over every element seen, read from a streaming histogram."""

    method = "percentile"

    def __init__(self, percentile: float, nbit: int) -> None:
        super().__init__(PERCENTILE_BINS, nbit)
        self.percentile = percentile

    def own_threshold(self) -> float:
        """The percentile, or the max when it falls among exact zeros (a mostly-zero tensor)."""
        value = self.histogram.percentile(self.percentile)
        return value if value > 0.0 else self.histogram.max


class KLDivergenceCollector(_HistogramCollector):
    """Entropy calibration over the non-zero |x| (see `kl.py` for the divergence)."""

    method = "kl_divergence"

    def __init__(self, nbit: int) -> None:
        self.levels = 1 << (min(nbit, KL_SEARCH_NBIT) - 1)
        super().__init__(KL_BINS_PER_LEVEL * self.levels, nbit)

    def own_threshold(self) -> float:
        stop = best_stop(self.histogram.counts, self.levels)
        return min(stop * self.histogram.bin_width, self.histogram.max)


class MSECollector(_HistogramCollector):
    """The threshold minimizing the histogram-expected squared error, rounding and clipping
    together, at the tensor's own bit width (see `error.py`)."""

    method = "mse"

    def __init__(self, nbit: int) -> None:
        super().__init__(ERROR_BINS, nbit)

    def own_threshold(self) -> float:
        """A geometric sweep down from max|x| on bins merged by `MSE_SWEEP_MERGE`, then a linear
        one at full resolution around its best point.

        The sweep also holds max|x| * 2**(nbit-1) / (2**(nbit-1) - 1), the threshold whose top level
        is max|x| itself (nothing clipped at all). Ties go to the larger threshold.
        """
        peak = self.histogram.max
        top = 1 << (self.nbit - 1)
        sweep = peak * np.exp2(-np.arange(MSE_OCTAVES * MSE_STEPS + 1) / MSE_STEPS)
        sweep = np.concatenate(([peak * top / (top - 1)], sweep))
        coarse = HistogramError(self.histogram, self.nbit, merge=MSE_SWEEP_MERGE)
        best = int(np.argmin(coarse.mse(sweep)))
        low, high = sweep[min(best + 1, sweep.size - 1)], sweep[max(best - 1, 0)]
        fine = np.concatenate((sweep[:1], np.linspace(high, low, MSE_REFINE)))
        errors = HistogramError(self.histogram, self.nbit)
        return float(fine[int(np.argmin(errors.mse(fine)))])


def make_collector(
    mode: str, *, percentile: float = 99.999, nbit: int = 8, global_scale: float = 8.0
) -> Collector:
    """A fresh collector for one tensor; `nbit` is the bit width that tensor is quantized to."""
    if not 2 <= nbit <= 32:
        raise QConfigError(f"a tensor is quantized to 2 to 32 bits, got {nbit}", field="calibrate_mode")
    if mode == "global_scale":
        if not (math.isfinite(global_scale) and global_scale > 0.0):
            raise QConfigError(
                f"global_scale must be a positive number, got {global_scale}", field="global_scale"
            )
        return GlobalScaleCollector(float(global_scale))
    if mode == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise QConfigError(f"percentile must be in (0, 100], got {percentile}", field="percentile")
        return PercentileCollector(float(percentile), nbit)
    collectors = {"max": MaxCollector, "kl_divergence": KLDivergenceCollector, "mse": MSECollector}
    if mode not in collectors:
        raise QConfigError(
            f"unknown calibrate_mode {mode!r}; expected one of {', '.join(MODES)}", field="calibrate_mode"
        )
    return collectors[mode](nbit)
