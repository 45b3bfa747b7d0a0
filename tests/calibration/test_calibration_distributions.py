"""Every mode on the distributions that collapsed real models, against brute force on the data.

The yardstick is the squared error of symmetric quantization measured on the samples themselves
(`measured_mse`), next to what the collectors expect from their histogram.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pytest

from worker.quantize.calibration import make_collector
from worker.quantize.calibration.collectors import MODES, SAFE_MSE_RATIO
from worker.quantize.calibration.error import HistogramError
from worker.quantize.calibration.histogram import AbsHistogram

DATA_MODES = [m for m in MODES if m != "global_scale"]
SIZE = 100_000


def measured_mse(x: np.ndarray, threshold: float, nbit: int = 8) -> float:
    """The error realize's convention gives on these very values: scale T / 2**(nbit-1), clip."""
    top = 2 ** (nbit - 1)
    scale = threshold / top
    q = np.clip(np.round(x / scale), -(top - 1), top - 1)
    return float(np.mean((x - q * scale) ** 2))


@functools.cache
def brute_force(name: str, nbit: int = 8) -> tuple[float, float]:
    """(threshold, error) of the best threshold between max / 2**11 and max * 128 / 127: 353
    geometric steps, then 200 linear ones between the best one's neighbours."""
    x = sample(name)
    peak = float(np.abs(x).max())
    grid = np.concatenate(([peak * 128 / 127], peak * np.exp2(-np.arange(353) / 32)))
    best = int(np.argmin([measured_mse(x, t, nbit) for t in grid]))
    fine = np.linspace(grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)], 200)
    errors = [measured_mse(x, t, nbit) for t in fine]
    best = int(np.argmin(errors))
    return float(fine[best]), errors[best]


def _relu_tail(rng: np.random.Generator) -> np.ndarray:
    """ReLU output: 70 % exact zeros, a log-normal bulk, a long tail up to 9.84."""
    x = rng.lognormal(-1.5, 1.0, SIZE)
    x[rng.random(SIZE) < 0.7] = 0.0
    return x * (9.84 / x.max())


def _laplace_outliers(rng: np.random.Generator) -> np.ndarray:
    x = rng.laplace(0.0, 1.0, SIZE)
    x[:8] = [45.0, -52.0, 38.0, 60.0, -41.0, 33.0, -58.0, 47.0]
    return x


def _one_hot(rng: np.random.Generator) -> np.ndarray:
    x = np.zeros((SIZE // 10, 10))
    x[np.arange(SIZE // 10), rng.integers(0, 10, SIZE // 10)] = 1.0
    return x.ravel()


DISTRIBUTIONS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "hardsigmoid input -[0.25, 3.3]": lambda rng: -rng.uniform(0.25, 3.3, SIZE),
    "SE gate [0.2, 1]": lambda rng: rng.uniform(0.2, 1.0, SIZE),
    "raw pixels 0..255": lambda rng: rng.integers(0, 256, SIZE).astype(np.float64),
    "ReLU 70 % zeros, long tail": _relu_tail,
    "gaussian": lambda rng: rng.standard_normal(SIZE),
    "laplacian with outliers": _laplace_outliers,
    "constant": lambda rng: np.full(SIZE // 10, -2.5),
    "one-hot": _one_hot,
}
#: Distributions where a bin's values are spread evenly enough for the expectation to be close.
CONTINUOUS = ["hardsigmoid input -[0.25, 3.3]", "SE gate [0.2, 1]", "ReLU 70 % zeros, long tail", "gaussian"]


@functools.cache
def sample(name: str) -> np.ndarray:
    x = DISTRIBUTIONS[name](np.random.default_rng(sorted(DISTRIBUTIONS).index(name))).astype(np.float32)
    x.flags.writeable = False
    return x


def choose(mode: str, x: np.ndarray, batches: int = 4):
    collector = make_collector(mode)
    for part in np.array_split(x, batches):
        collector.update(part)
    return collector


@pytest.mark.parametrize("mode", DATA_MODES)
@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_no_mode_is_worse_than_max_beyond_the_bound(name: str, mode: str) -> None:
    x = sample(name)
    choice = choose(mode, x).choice()
    peak = float(np.abs(x).max())
    assert choice.mse_vs_max <= SAFE_MSE_RATIO
    assert choice.method in (mode, f"max (fallback from {mode})")
    if choice.method != mode:
        assert choice.threshold == peak and choice.mse_vs_max == 1.0
    # measured on the data, not only expected from the histogram (a little slack for the bins)
    assert measured_mse(x, choice.threshold) <= 1.05 * SAFE_MSE_RATIO * measured_mse(x, peak)
    assert 0.0 <= choice.clipped <= 0.01
    assert choice.clipped == pytest.approx(np.mean(np.abs(x) > choice.threshold), abs=2e-3)


@pytest.mark.parametrize("name", ["hardsigmoid input -[0.25, 3.3]", "SE gate [0.2, 1]", "raw pixels 0..255"])
def test_kl_keeps_a_range_that_never_comes_near_zero(name: str) -> None:
    """These collapsed to about the smallest |x| (60-100 % clipped) before the candidate floor. KL's
    own threshold keeps the range (the safety fallback is not what saves it), and so does the choice,
    whether KL's or max's where KL's is a hair worse in expected error."""
    x = sample(name)
    collector = choose("kl_divergence", x)
    assert collector.own_threshold() >= 0.99 * float(np.abs(x).max())
    assert collector.choice().threshold >= 0.99 * float(np.abs(x).max())


def test_kl_never_clips_the_bulk_of_a_relu_tail() -> None:
    x = sample("ReLU 70 % zeros, long tail")
    own = choose("kl_divergence", x).own_threshold()
    nonzero = np.abs(x[x != 0])
    assert np.mean(nonzero > own) <= 0.01


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_mse_is_the_brute_force_optimum(name: str) -> None:
    x = sample(name)
    choice = choose("mse", x).choice()
    best_threshold, best_error = brute_force(name)
    assert choice.method == "mse"
    # on discrete data (integers, spikes) the error is jagged between grid alignments that the
    # evenly-spread bins smooth over: a looser bound there
    slack = 1.02 if name in CONTINUOUS else 1.05
    assert measured_mse(x, choice.threshold) <= slack * best_error + 1e-12, (choice, best_threshold)


@pytest.mark.parametrize("mode", DATA_MODES)
@pytest.mark.parametrize("name", CONTINUOUS)
def test_expected_error_matches_the_measured_one(name: str, mode: str) -> None:
    x = sample(name)
    collector = choose(mode, x)
    choice = collector.choice()
    expected = HistogramError(collector.histogram, 8).mse(choice.threshold)[0]
    assert expected == pytest.approx(measured_mse(x, choice.threshold), rel=0.03)
    power = float(np.mean(x.astype(np.float64) ** 2))
    assert choice.sqnr_db == pytest.approx(10 * np.log10(power / measured_mse(x, choice.threshold)), abs=0.2)


def test_gaussian_thresholds_are_where_the_literature_puts_them() -> None:
    x = sample("gaussian")
    sigma = float(np.std(x))
    assert 3.6 * sigma <= choose("mse", x).threshold() <= 4.4 * sigma  # 8-bit MSE optimum ~ 4 sigma
    assert 3.5 * sigma <= choose("kl_divergence", x).threshold() <= 5.5 * sigma
    assert choose("mse", x).choice().mse_vs_max < 0.9  # max|x| of 100k samples is ~4.4 sigma


def test_one_hot_is_exact_with_max_and_mse() -> None:
    x = sample("one-hot")
    assert choose("max", x).threshold() == 1.0
    choice = choose("mse", x).choice()
    assert choice.threshold == pytest.approx(128 / 127)  # 1.0 is the top level: no error at all
    assert measured_mse(x, choice.threshold) < 1e-12


@pytest.mark.parametrize("mode", DATA_MODES)
def test_choice_does_not_depend_on_batching_or_order(mode: str) -> None:
    x = sample("laplacian with outliers")
    one = choose(mode, x, batches=1).choice()
    assert choose(mode, x, batches=13).choice() == one
    assert choose(mode, x[::-1].copy(), batches=5).choice() == one


@pytest.mark.parametrize("nbit", [4, 6, 8, 16])
def test_mse_uses_the_tensors_bit_width(nbit: int) -> None:
    x = sample("gaussian")
    collector = make_collector("mse", nbit=nbit)
    collector.update(x)
    chosen = collector.threshold()
    _, best_error = brute_force("gaussian", nbit)
    assert measured_mse(x, chosen, nbit) <= 1.03 * best_error


def test_expected_error_of_a_bin_wider_than_a_step() -> None:
    """One bin [0, 1) holding 1000 values, 8 steps of 1/8 inside: the error is step**2 / 12."""
    hist = AbsHistogram(2)
    hist.add(np.array([1.5], np.float32))  # range [0, 2): bins of width 1
    hist.counts[:] = [1000, 0]
    hist.max = 1.0
    errors = HistogramError(hist, 4)  # threshold 8 * (1/8) = 1, steps of 1/8, top level 7/8
    rounding = (1 / 8) ** 2 / 12 * 7 / 8
    clipping = (1 / 8) ** 3 / 3  # values in [7/8, 1) clip to 7/8
    assert errors.mse(1.0)[0] == pytest.approx((rounding + clipping) * 1000 / hist.total)
