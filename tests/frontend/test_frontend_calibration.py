"""load_calibration: the .npz contract, and a named CalibrationError for each way to break it."""

from __future__ import annotations

import numpy as np
import pytest

import tests.models as models
from tests.frontend.helpers import relu_model
from worker.errors import CalibrationError
from worker.frontend import load_calibration, load_onnx


def _error(path, model) -> CalibrationError:
    with pytest.raises(CalibrationError) as err:
        load_calibration(path, model)
    assert err.value.code == "E_CALIBRATION"
    return err.value


def test_no_file_means_no_calibration():
    assert load_calibration(None, models.small_mlp()) is None


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_samples_come_back_as_float32(save_npz, dtype):
    samples = np.random.default_rng(0).standard_normal((5, 64)).astype(dtype)
    loaded = load_calibration(save_npz(x=samples), models.small_mlp())
    assert list(loaded) == ["x"]
    assert loaded["x"].dtype == np.float32
    np.testing.assert_array_equal(loaded["x"], samples.astype(np.float32))


def test_two_inputs_and_dynamic_dims(save_npz):
    model = models.exported_model("unet_small")
    loaded = load_calibration(save_npz(images=np.zeros((3, 3, 24, 40), np.float32)), load_onnx(model))
    assert loaded["images"].shape == (3, 3, 24, 40)
    pair = models.seed_mul_sigmoid()
    loaded = load_calibration(save_npz(**models.random_calibration(pair, 2, 0)), pair)
    assert sorted(loaded) == ["gate", "x"]


def test_missing_input_is_named(save_npz):
    err = _error(save_npz(x=np.zeros((2, 16, 64, 64), np.float32)), models.seed_mul_sigmoid())
    assert err.detail["input"] == "gate"
    assert "missing ['gate']" in err.message


def test_extra_key_is_named(save_npz):
    path = save_npz(x=np.zeros((2, 64), np.float32), labels=np.zeros((2, 64), np.float32))
    err = _error(path, models.small_mlp())
    assert err.detail["input"] == "labels"
    assert "not model inputs ['labels']" in err.message


def test_wrong_layout_says_what_is_expected(save_npz):
    model = relu_model({"x": ["N", 3, 224, 224]})
    err = _error(save_npz(x=np.zeros((8, 224, 224, 3), np.float32)), model)
    assert err.message == "input 'x' expects (N, 3, 224, 224), got (8, 224, 224, 3)"
    assert err.detail == {"input": "x"}


def test_wrong_rank(save_npz):
    err = _error(save_npz(x=np.zeros((4, 3, 32), np.float32)), relu_model({"x": ["N", 3, "H", "W"]}))
    assert err.message == "input 'x' expects (N, 3, ?, ?), got (4, 3, 32)"


def test_integer_samples_are_refused(save_npz):
    err = _error(save_npz(x=np.zeros((2, 64), np.int64)), models.small_mlp())
    assert err.detail["input"] == "x"
    assert "int64" in err.message and "float" in err.message


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_non_finite_values_are_refused(save_npz, bad):
    samples = np.zeros((3, 64), np.float64)
    samples[1, 5] = bad
    err = _error(save_npz(x=samples), models.small_mlp())
    assert err.detail["input"] == "x"
    assert "1 non-finite" in err.message


def test_empty_batch_is_refused(save_npz):
    err = _error(save_npz(x=np.zeros((0, 64), np.float32)), models.small_mlp())
    assert err.detail["input"] == "x"
    assert "at least one sample" in err.message


def test_static_batch_takes_whole_batches(save_npz):
    model = relu_model({"x": [4, 8]})
    assert load_calibration(save_npz(x=np.zeros((8, 8), np.float32)), model)["x"].shape == (8, 8)
    err = _error(save_npz(x=np.zeros((6, 8), np.float32)), model)
    assert "multiple of its static batch 4" in err.message


def test_inputs_must_have_the_same_number_of_samples(save_npz):
    path = save_npz(x=np.zeros((3, 16, 64, 64), np.float32), gate=np.zeros((2, 16, 64, 64), np.float32))
    err = _error(path, models.seed_mul_sigmoid())
    assert "same number of samples" in err.message
    assert err.detail["input"] == "gate"


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, x=np.array([{"not": "data"}, None], dtype=object))
    err = _error(path, models.small_mlp())
    assert err.detail["input"] == "x"
    assert "pickle" in err.message


def test_a_single_npy_array_is_refused(tmp_path):
    path = tmp_path / "c.npy"
    np.save(path, np.zeros((2, 64), np.float32))
    assert "not a single .npy" in _error(path, models.small_mlp()).message


def test_garbage_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(b"PK\x03\x04 truncated zip")
    assert ".npz archive" in _error(path, models.small_mlp()).message
