"""make_collector: every mode's threshold on known data, degenerate tensors, errors, fixed state."""

from __future__ import annotations

import numpy as np
import pytest

from worker.errors import CalibrationError, QConfigError
from worker.quantize.calibration import Collector, make_collector
from worker.quantize.calibration.collectors import MODES, ZERO_TENSOR_THRESHOLD

DATA_MODES = [m for m in MODES if m != "global_scale"]


def state_nbytes(collector: Collector) -> int:
    """Bytes of every numpy array the collector holds, one level of attributes deep."""
    total = 0
    for value in vars(collector).values():
        inner = vars(value).values() if hasattr(value, "__dict__") else [value]
        total += sum(v.nbytes for v in inner if isinstance(v, np.ndarray))
    return total


def growing_batches(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((2, 8, 16, 16)) * (1 + k)).astype(np.float32) for k in range(count)]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_a_collector_named_after_its_mode(mode: str) -> None:
    collector = make_collector(mode)
    assert isinstance(collector, Collector)
    assert collector.method == mode
    assert collector.samples == 0


def test_global_scale_needs_no_data() -> None:
    assert make_collector("global_scale").threshold() == 8.0
    collector = make_collector("global_scale", global_scale=2.5)
    for batch in growing_batches(3):
        collector.update(batch)
    assert collector.samples == 3
    assert collector.threshold() == 2.5


def test_max_over_batches_is_the_max_of_all_data() -> None:
    batches = growing_batches(5, seed=1)
    batches[2].flat[7] = -123.25  # the extreme is negative and in the middle of the stream
    collector = make_collector("max")
    for batch in batches:
        collector.update(batch)
    assert collector.threshold() == float(np.abs(np.concatenate([b.ravel() for b in batches])).max())
    assert collector.threshold() == 123.25


@pytest.mark.parametrize("q", [99.0, 99.9, 99.999])
def test_percentile_matches_numpy(q: float) -> None:
    batches = growing_batches(6, seed=2)
    collector = make_collector("percentile", percentile=q)
    for batch in batches:
        collector.update(batch)
    everything = np.abs(np.concatenate([b.ravel() for b in batches]))
    bin_width = 2 * float(everything.max()) / (1 << 15)
    assert collector.own_threshold() == pytest.approx(np.percentile(everything, q), abs=bin_width)


def test_default_percentile_is_99_999() -> None:
    rng = np.random.default_rng(3)
    data = rng.uniform(-1.0, 1.0, 1_000_000).astype(np.float32)
    collector = make_collector("percentile")
    collector.update(data)
    assert collector.threshold() == pytest.approx(np.percentile(np.abs(data), 99.999), abs=1e-4)


@pytest.mark.parametrize("mode", DATA_MODES)
def test_all_zero_tensor_gets_a_positive_threshold(mode: str) -> None:
    collector = make_collector(mode)
    collector.update(np.zeros((1, 4, 8, 8), np.float32))
    collector.update(np.zeros((1, 4, 8, 8), np.float32))
    assert collector.threshold() == ZERO_TENSOR_THRESHOLD > 0


@pytest.mark.parametrize("mode", ["max", "percentile", "kl_divergence"])
@pytest.mark.parametrize("value", [3.0, -0.7, 1e-30])
def test_constant_tensor_threshold_is_its_magnitude(mode: str, value: float) -> None:
    collector = make_collector(mode)
    collector.update(np.full((2, 3, 5), value, np.float32))
    assert collector.threshold() == pytest.approx(abs(value), rel=1e-6)
    assert collector.choice().clipped == 0.0


@pytest.mark.parametrize("value", [3.0, -0.7, 1e-30])
def test_mse_puts_a_constant_on_the_top_level(value: float) -> None:
    """The one value is exact when it is the top level: T = |v| * 128 / 127, error ~0."""
    collector = make_collector("mse")
    collector.update(np.full((2, 3, 5), value, np.float32))
    choice = collector.choice()
    assert choice.threshold == pytest.approx(abs(value) * 128 / 127, rel=1e-6)
    assert choice.clipped == 0.0 and choice.mse_vs_max < 1e-3  # the top bin spreads its values


def test_percentile_of_a_mostly_zero_tensor_falls_back_to_the_max() -> None:
    data = np.zeros(1_000_000, np.float32)
    data[:3] = [0.5, -2.0, 1.0]
    collector = make_collector("percentile", percentile=99.9)
    collector.update(data)
    assert collector.threshold() == 2.0


@pytest.mark.parametrize("mode", DATA_MODES)
def test_state_does_not_grow_with_batches(mode: str) -> None:
    collector = make_collector(mode)
    batches = growing_batches(40, seed=4)
    collector.update(batches[0])
    size = state_nbytes(collector)
    for batch in batches[1:]:
        collector.update(batch)
    assert state_nbytes(collector) == size
    assert collector.samples == 40
    assert 0 < collector.threshold() <= 40 * 6  # the last batch is ~N(0, 40²)


@pytest.mark.parametrize("mode", DATA_MODES)
def test_non_finite_activation_is_a_calibration_error(mode: str) -> None:
    collector = make_collector(mode)
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        collector.update(np.array([1.0, np.inf], np.float32))


@pytest.mark.parametrize("mode", DATA_MODES)
def test_threshold_without_batches_is_a_calibration_error(mode: str) -> None:
    with pytest.raises(CalibrationError) as info:
        make_collector(mode).threshold()
    assert info.value.code == "E_CALIBRATION"


@pytest.mark.parametrize(
    ("mode", "kwargs", "field"),
    [
        ("minmax", {}, "calibrate_mode"),
        ("percentile", {"percentile": 0.0}, "percentile"),
        ("percentile", {"percentile": 100.5}, "percentile"),
        ("global_scale", {"global_scale": 0.0}, "global_scale"),
        ("global_scale", {"global_scale": float("nan")}, "global_scale"),
        ("kl_divergence", {"nbit": 1}, "calibrate_mode"),
        ("mse", {"nbit": 33}, "calibrate_mode"),
    ],
)
def test_bad_settings_are_qconfig_errors(mode: str, kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(QConfigError) as info:
        make_collector(mode, **kwargs)
    assert info.value.detail["field"] == field
