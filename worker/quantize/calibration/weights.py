"""Weight thresholds: Relay's `weight_scale` modes, per tensor or per output channel.

Weights are known at compile time, so their threshold is an exact reduction, no streaming.
`power2` rounds the max up to a power of two so that, with scale = T / 2**(nbit-1), the weight
scale is a power of two too and requantize can be a shift.
"""

from __future__ import annotations

import numpy as np

from worker.errors import ModelError, QConfigError

WEIGHT_MODES = ("max", "power2")

#: Threshold of an all-zero weight (or channel). Its quantized values are 0 at any scale; a small
#: power of two keeps power2 mode exact, and it is not so small that a float bias quantized at
#: input_scale * weight_scale overflows int32 for ordinary biases.
ZERO_WEIGHT_THRESHOLD = 2.0**-8


def power2_round_up(t: np.ndarray | float) -> np.ndarray:
    """Smallest power of two >= t, elementwise, for t > 0 (powers of two map to themselves)."""
    t = np.asarray(t, dtype=np.float64)
    mantissa, exponent = np.frexp(t)
    return np.where(mantissa == 0.5, t, np.ldexp(1.0, exponent))


def weight_threshold(w: np.ndarray, mode: str, axis: int | None) -> np.ndarray:
    """max|w| (mode 'max') or its power-of-two ceiling (mode 'power2'), never 0.

    With `axis` None the result has shape (); otherwise one threshold per slice along `axis`,
    shape (w.shape[axis],). float32, which holds any power of two a float32 weight can produce.
    """
    if mode not in WEIGHT_MODES:
        raise QConfigError(
            f"unknown weight_scale {mode!r}; expected one of {', '.join(WEIGHT_MODES)}", field="weight_scale"
        )
    w = np.asarray(w)
    if axis is None:
        reduce_axes: tuple[int, ...] | None = None
    else:
        channel = axis % w.ndim if -w.ndim <= axis < w.ndim else None
        if channel is None:
            raise ValueError(f"axis {axis} is out of range for a weight of shape {w.shape}")
        reduce_axes = tuple(a for a in range(w.ndim) if a != channel)
    peak = np.max(np.abs(w), axis=reduce_axes, initial=0.0).astype(np.float64)
    if not np.all(np.isfinite(peak)):
        raise ModelError(
            "a weight tensor contains NaN or infinite values; fix the model before quantizing",
            reason="non-finite weight",
        )
    peak = np.where(peak > 0.0, peak, ZERO_WEIGHT_THRESHOLD)
    if mode == "power2":
        peak = power2_round_up(peak)
    return peak.astype(np.float32)
