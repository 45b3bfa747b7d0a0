"""Metrics against values worked out by hand, and the streaming accumulator against one-shot calls."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.report import metrics
from worker.report.metrics import SQNR_CAP_DB, ErrorAccumulator


def test_cosine_hand_values() -> None:
    a = np.array([1.0, 0.0, 0.0])
    assert metrics.cosine(a, np.array([0.0, 2.0, 0.0])) == pytest.approx(0.0)
    assert metrics.cosine(a, 3 * a) == pytest.approx(1.0)
    assert metrics.cosine(a, -a) == pytest.approx(-1.0)
    # (1,1)·(1,0) / (√2·1) = 1/√2
    assert metrics.cosine(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(1 / math.sqrt(2))
    # flattened: the shape does not matter, only the elements
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert metrics.cosine(m, m.T) == pytest.approx((1 + 6 + 6 + 16) / 30)


def test_cosine_of_zero_tensors() -> None:
    zero = np.zeros(4)
    assert metrics.cosine(zero, zero) == 1.0
    assert metrics.cosine(zero, np.ones(4)) == 0.0


def test_sqnr_known_noise_level() -> None:
    # ref = ±1 (power 1 per element), noise = ±0.1 (power 0.01): SQNR = 10·log10(100) = 20 dB
    ref = np.array([1.0, -1.0, 1.0, -1.0])
    noisy = ref + np.array([0.1, -0.1, -0.1, 0.1])
    assert metrics.sqnr_db(ref, noisy) == pytest.approx(20.0)
    # noise power 1/4 of signal: 10·log10(4) ≈ 6.0206 dB
    assert metrics.sqnr_db(ref, ref * 0.5) == pytest.approx(10 * math.log10(4))


def test_sqnr_is_capped_not_infinite() -> None:
    x = np.arange(5.0)
    assert metrics.sqnr_db(x, x.copy()) == SQNR_CAP_DB
    assert metrics.sqnr_db(np.zeros(3), np.ones(3)) == -SQNR_CAP_DB


def test_abs_errors() -> None:
    ref = np.array([0.0, 1.0, 2.0, 3.0])
    q = np.array([0.5, 1.0, 1.0, 3.25])
    assert metrics.max_abs_error(ref, q) == pytest.approx(1.0)
    assert metrics.mean_abs_error(ref, q) == pytest.approx((0.5 + 0 + 1 + 0.25) / 4)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((8, 10), True), ((8, 10, 1, 1), True), ((8, 1), False), ((8,), False), ((8, 10, 2, 2), False)],
)
def test_class_score_shapes(shape: tuple[int, ...], expected: bool) -> None:
    assert metrics.looks_like_class_scores(shape) is expected


def test_top1_agreement() -> None:
    ref = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    q = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.0, 0.6, 0.4]])
    # rows 0 and 2 agree, rows 1 and 3 do not
    assert metrics.top1_agreement(ref, q) == pytest.approx(0.5)
    assert metrics.top1_agreement(ref.reshape(4, 3, 1, 1), q.reshape(4, 3, 1, 1)) == pytest.approx(0.5)
    assert metrics.top1_agreement(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4))) is None


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        metrics.cosine(np.zeros((2, 3)), np.zeros((3, 2)))


def test_nonfinite_elements_are_counted_and_excluded() -> None:
    ref = np.array([1.0, 2.0, np.nan, 4.0])
    q = np.array([1.0, 2.0, 3.0, np.inf])
    acc = ErrorAccumulator()
    acc.update(ref, q)
    assert acc.nonfinite == 2
    assert acc.sqnr_db == SQNR_CAP_DB  # the finite elements match exactly
    assert metrics.max_abs_error(ref, q) == 0.0


def test_streaming_equals_one_shot() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(24, 10)).astype(np.float32)
    q = (ref + rng.normal(scale=0.05, size=ref.shape)).astype(np.float32)
    q[3] = q[3][::-1]  # disturb one row so top-1 is not trivially 1.0
    acc = ErrorAccumulator()
    for start in (0, 5, 13):  # uneven batches
        stop = {0: 5, 5: 13, 13: 24}[start]
        acc.update(ref[start:stop], q[start:stop])
    result = acc.output_accuracy("logits")
    assert result.cosine == pytest.approx(metrics.cosine(ref, q), rel=1e-12)
    assert result.sqnr_db == pytest.approx(metrics.sqnr_db(ref, q), rel=1e-12)
    assert result.max_abs_error == pytest.approx(metrics.max_abs_error(ref, q), rel=1e-12)
    assert result.mean_abs_error == pytest.approx(metrics.mean_abs_error(ref, q), rel=1e-12)
    assert result.top1_agreement == pytest.approx(metrics.top1_agreement(ref, q))
    assert result.top1_agreement < 1.0
    layer = acc.layer_accuracy("conv1", "nn.conv2d")
    assert (layer.sqnr_db, layer.cosine) == (result.sqnr_db, result.cosine)


def test_streaming_top1_needs_every_batch_to_be_class_scores() -> None:
    acc = ErrorAccumulator()
    acc.update(np.eye(3), np.eye(3))
    assert acc.top1_agreement == 1.0
    acc.update(np.ones((1, 3, 2, 2)), np.ones((1, 3, 2, 2)))
    assert acc.top1_agreement is None
