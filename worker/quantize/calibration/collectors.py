"""Streaming per-tensor statistics that pick an activation's quantization threshold.

Convention shared with realize: symmetric quantization, zero point 0; the threshold T is the |x|
mapped to the top of the integer range, scale = T / 2**(nbit-1), values clipped to
±(2**(nbit-1) - 1). The calibrate pass makes one collector per quantized tensor and calls
`update` once per batch; every collector keeps a fixed amount of state.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

from worker.errors import CalibrationError, QConfigError
from worker.quantize.calibration.histogram import AbsHistogram, abs_max
from worker.quantize.calibration.kl import best_stop

MODES = ("global_scale", "max", "percentile", "kl_divergence")

#: Threshold of a tensor that was exactly zero on every calibration batch. Zero is exact at any
#: scale, so any value is correct; 1.0 keeps the requantize multipliers and int32 biases of the
#: neighbouring ops in their ordinary range, where a tiny value could overflow them.
ZERO_TENSOR_THRESHOLD = 1.0

#: Bins of the percentile histogram: the estimate is within 2 * max|x| / 32768 of the exact one.
PERCENTILE_BINS = 1 << 15

#: Bins of the KL histogram per quantization level: 4096 at 8 bits (TensorRT uses 2048). The data
#: fills more than the lower half of the range (max|x| > upper / 2), so the widest candidate still
#: merges >= 16 bins per level, and the narrowest (one bin per level) is at most max|x| / 16:
#: outliers at 60 sigma still leave a 4 sigma threshold reachable. Beyond `MAX_KL_NBIT` the
#: (candidates x levels) search gets too large.
KL_BINS_PER_LEVEL = 32
MAX_KL_NBIT = 10


@runtime_checkable
class Collector(Protocol):
    """What the calibrate pass needs from a statistic: feed batches, then read a threshold."""

    samples: int
    method: str

    def update(self, x: np.ndarray) -> None: ...

    def threshold(self) -> float: ...


def _require_samples(collector: Collector) -> None:
    if collector.samples == 0:
        raise CalibrationError(
            f"{collector.method} calibration needs at least one calibration batch, got none; "
            "pass calibration data with at least one sample per input",
            reason="no batches",
        )


class GlobalScaleCollector:
    """Relay's default: one fixed threshold for every tensor, no data needed."""

    method = "global_scale"

    def __init__(self, global_scale: float) -> None:
        self.global_scale = global_scale
        self.samples = 0

    def update(self, x: np.ndarray) -> None:
        self.samples += 1

    def threshold(self) -> float:
        return self.global_scale


class MaxCollector:
    """Running max |x|: never clips a calibration value, so outliers set the resolution."""

    method = "max"

    def __init__(self) -> None:
        self.max = 0.0
        self.samples = 0

    def update(self, x: np.ndarray) -> None:
        self.max = max(self.max, abs_max(x))
        self.samples += 1

    def threshold(self) -> float:
        _require_samples(self)
        return self.max if self.max > 0.0 else ZERO_TENSOR_THRESHOLD


class _HistogramCollector:
    """Collectors that read their threshold off a streaming |x| histogram (fixed-size state)."""

    method = ""

    def __init__(self, bins: int) -> None:
        self.histogram = AbsHistogram(bins)
        self.samples = 0

    def update(self, x: np.ndarray) -> None:
        self.histogram.add(x)
        self.samples += 1

    def threshold(self) -> float:
        _require_samples(self)
        if self.histogram.max == 0.0:
            return ZERO_TENSOR_THRESHOLD
        return self._from_histogram()

    def _from_histogram(self) -> float:
        raise NotImplementedError


class PercentileCollector(_HistogramCollector):
    """The given percentile of |x| over every element seen, read from a streaming histogram."""

    method = "percentile"

    def __init__(self, percentile: float) -> None:
        super().__init__(PERCENTILE_BINS)
        self.percentile = percentile

    def _from_histogram(self) -> float:
        """The percentile, or the max when it falls among exact zeros (a mostly-zero tensor)."""
        value = self.histogram.percentile(self.percentile)
        return value if value > 0.0 else self.histogram.max


class KLDivergenceCollector(_HistogramCollector):
    """Entropy calibration over the non-zero |x| (see `kl.py` for the divergence)."""

    method = "kl_divergence"

    def __init__(self, nbit: int) -> None:
        self.levels = 1 << (nbit - 1)
        super().__init__(KL_BINS_PER_LEVEL * self.levels)

    def _from_histogram(self) -> float:
        stop = best_stop(self.histogram.counts, self.levels)
        return min(stop * self.histogram.bin_width, self.histogram.max)


def make_collector(
    mode: str, *, percentile: float = 99.999, nbit: int = 8, global_scale: float = 8.0
) -> Collector:
    """A fresh collector for one tensor; `nbit` is the bit width that tensor is quantized to."""
    if mode == "global_scale":
        if not (math.isfinite(global_scale) and global_scale > 0.0):
            raise QConfigError(
                f"global_scale must be a positive number, got {global_scale}", field="global_scale"
            )
        return GlobalScaleCollector(float(global_scale))
    if mode == "max":
        return MaxCollector()
    if mode == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise QConfigError(f"percentile must be in (0, 100], got {percentile}", field="percentile")
        return PercentileCollector(float(percentile))
    if mode == "kl_divergence":
        if not 2 <= nbit <= MAX_KL_NBIT:
            raise QConfigError(
                f"kl_divergence calibration supports 2 to {MAX_KL_NBIT} bits, got {nbit}; "
                "use calibrate_mode 'percentile' or 'max' for wider integers",
                field="calibrate_mode",
            )
        return KLDivergenceCollector(nbit)
    raise QConfigError(
        f"unknown calibrate_mode {mode!r}; expected one of {', '.join(MODES)}", field="calibrate_mode"
    )
