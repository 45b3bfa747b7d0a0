"""Weight thresholds: exact max and power-of-two values, per tensor and per channel."""

from __future__ import annotations

import numpy as np
import pytest

from worker.errors import ModelError, QConfigError
from worker.quantize.calibration import power2_round_up, weight_threshold
from worker.quantize.calibration.weights import ZERO_WEIGHT_THRESHOLD


def conv_weight() -> np.ndarray:
    """OIHW, 4 output channels whose max |w| are 0.3, 1.0, 0 and 5.0 (the last one negative)."""
    w = np.zeros((4, 2, 3, 3), np.float32)
    w[0] = np.linspace(-0.3, 0.2, 18).reshape(2, 3, 3)
    w[1, 1, 2, 2] = 1.0
    w[1, 0] = 0.25
    w[3] = np.linspace(-5.0, 4.0, 18).reshape(2, 3, 3)
    return w


def test_power2_round_up() -> None:
    t = np.array([0.125, 0.3, 1.0, 1.0 + 2.0**-23, 1.5, 3.0, 4.0, 1000.0, 2.0**-40])
    expected = [0.125, 0.5, 1.0, 2.0, 2.0, 4.0, 4.0, 1024.0, 2.0**-40]
    np.testing.assert_array_equal(power2_round_up(t), expected)
    assert power2_round_up(5.0) == 8.0


def test_per_tensor() -> None:
    w = conv_weight()
    peak = weight_threshold(w, "max", None)
    assert peak.shape == ()
    assert peak == np.float32(5.0)
    assert weight_threshold(w, "power2", None) == 8.0
    assert weight_threshold(w * 0.01, "power2", None) == 0.0625


def test_per_output_channel() -> None:
    w = conv_weight()
    np.testing.assert_array_equal(
        weight_threshold(w, "max", 0), np.array([0.3, 1.0, ZERO_WEIGHT_THRESHOLD, 5.0], np.float32)
    )
    np.testing.assert_array_equal(weight_threshold(w, "power2", 0), [0.5, 1.0, ZERO_WEIGHT_THRESHOLD, 8.0])


def test_axis_selects_the_kept_dimension() -> None:
    w = conv_weight()
    transposed = np.ascontiguousarray(w.transpose(1, 0, 2, 3))  # IOHW, like conv_transpose
    np.testing.assert_array_equal(weight_threshold(transposed, "power2", 1), [0.5, 1.0, 2.0**-8, 8.0])
    last = np.ascontiguousarray(w.transpose(1, 2, 3, 0))
    np.testing.assert_array_equal(weight_threshold(last, "max", -1), weight_threshold(w, "max", 0))
    np.testing.assert_array_equal(weight_threshold(w, "max", 1), [5.0, 4.0])
    with pytest.raises(ValueError):
        weight_threshold(w, "max", 4)


def test_zero_weights_never_give_zero() -> None:
    assert weight_threshold(np.zeros((3, 3), np.float32), "max", None) == ZERO_WEIGHT_THRESHOLD
    thresholds = weight_threshold(np.zeros((3, 5), np.float32), "power2", 0)
    assert thresholds.shape == (3,)
    assert np.all(thresholds == ZERO_WEIGHT_THRESHOLD)
    assert power2_round_up(ZERO_WEIGHT_THRESHOLD) == ZERO_WEIGHT_THRESHOLD  # stays a power of two


def test_bad_inputs() -> None:
    with pytest.raises(QConfigError) as info:
        weight_threshold(conv_weight(), "percentile", None)
    assert info.value.detail["field"] == "weight_scale"
    w = conv_weight()
    w[2, 0, 0, 0] = np.nan
    with pytest.raises(ModelError):
        weight_threshold(w, "power2", 0)
