"""load_calibration: the .npz contract in both layouts, one sequence of feeds, and a named
CalibrationError for each way to break it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import tests.models as models
from tests.frontend.helpers import relu_model
from worker.errors import CalibrationError
from worker.frontend import CalibrationSet, load_calibration, load_onnx, model_inputs


def _error(path, model) -> CalibrationError:
    with pytest.raises(CalibrationError) as err:
        load_calibration(path, model)
    assert err.value.code == "E_CALIBRATION"
    assert err.value.detail["field"] == "calibration"
    return err.value


def _typed_model(inputs: dict[str, tuple[int, list]]) -> object:
    """Identity per input with the given ONNX element type and dims (a str dim is symbolic)."""
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name in inputs]
    graph = helper.make_graph(
        nodes,
        "typed",
        [helper.make_tensor_value_info(n, t, dims) for n, (t, dims) in inputs.items()],
        [helper.make_tensor_value_info(f"{n}_out", t, dims) for n, (t, dims) in inputs.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


#: silero-vad's inputs: audio (N, samples), an LSTM state batched on axis 1, a scalar sample rate
SILERO_LIKE = {
    "input": (TensorProto.FLOAT, ["N", "S"]),
    "state": (TensorProto.FLOAT, [2, "N", 128]),
    "sr": (TensorProto.INT64, []),
}


def _silero_feeds(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for k in range(count):
        feeds[f"{k}/input"] = rng.standard_normal((1, 576)).astype(np.float32)
        feeds[f"{k}/state"] = rng.standard_normal((2, 1, 128)).astype(np.float32)
        feeds[f"{k}/sr"] = np.array(16000, np.int64)
    return feeds


def test_no_file_means_no_calibration():
    assert load_calibration(None, models.small_mlp()) is None


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_samples_are_fed_in_the_model_dtype(save_npz, dtype):
    samples = np.random.default_rng(0).standard_normal((5, 64)).astype(dtype)
    loaded = load_calibration(save_npz(x=samples), models.small_mlp())
    assert (loaded.layout, loaded.names, loaded.samples, loaded.shapes) == (
        "stacked",
        ["x"],
        5,
        {"x": (1, 64)},
    )
    feeds = list(loaded.feeds())
    assert len(feeds) == 5 and all(f[0].dtype == np.float32 and f[0].shape == (1, 64) for f in feeds)
    np.testing.assert_array_equal(np.concatenate([f[0] for f in feeds]), samples.astype(np.float32))


def test_two_inputs_and_dynamic_dims(save_npz):
    model = models.exported_model("unet_small")
    loaded = load_calibration(save_npz(images=np.zeros((3, 3, 24, 40), np.float32)), load_onnx(model))
    assert loaded.shapes == {"images": (1, 3, 24, 40)}
    pair = models.seed_mul_sigmoid()
    loaded = load_calibration(save_npz(**models.random_calibration(pair, 2, 0)), pair)
    assert loaded.names == ["x", "gate"]


def test_integer_inputs_keep_their_dtype(save_npz):
    model = _typed_model({"ids": (TensorProto.INT32, ["N", 16]), "x": (TensorProto.FLOAT, ["N", 16])})
    ids = np.arange(48, dtype=np.int64).reshape(3, 16)  # any integer dtype, cast to the model's
    loaded = load_calibration(save_npz(ids=ids, x=np.ones((3, 16), np.float64)), model)
    first = loaded.feed(0)
    assert [a.dtype for a in first] == [np.int32, np.float32]
    np.testing.assert_array_equal(first[0], ids[:1])


def test_integer_input_refuses_float_samples(save_npz):
    model = _typed_model({"bytes": (TensorProto.INT32, ["N", 16])})
    err = _error(save_npz(bytes=np.zeros((2, 16), np.float32)), model)
    assert err.detail["input"] == "bytes" and "integer samples" in err.message and "int32" in err.message


def test_integer_values_must_fit_the_model_dtype(save_npz):
    model = _typed_model({"ids": (TensorProto.INT8, ["N", 4])})
    ids = np.zeros((3, 4), np.int64)
    ids[2, 1] = 300
    err = _error(save_npz(ids=ids), model)
    assert err.detail == {"field": "calibration", "input": "ids", "sample": 2}
    assert "outside int8" in err.message


def test_per_sample_layout_takes_scalars_and_states_batched_on_axis_1(save_npz):
    model = _typed_model(SILERO_LIKE)
    feeds = _silero_feeds(5)
    loaded = load_calibration(save_npz(**feeds), model)
    assert loaded.layout == "per_sample" and loaded.samples == 5 and loaded.batch == 1
    assert loaded.shapes == {"input": (1, 576), "state": (2, 1, 128), "sr": ()}
    got = list(loaded.feeds())
    assert len(got) == 5
    for k, feed in enumerate(got):
        for spec, array in zip(model_inputs(model), feed, strict=True):
            np.testing.assert_array_equal(array, feeds[f"{k}/{spec.name}"])
            assert array.dtype == spec.dtype and array.shape == feeds[f"{k}/{spec.name}"].shape
    calib, held = loaded.split_holdout(None)
    assert (calib.samples, held.samples) == (4, 1)
    np.testing.assert_array_equal(next(held.feeds())[1], feeds["4/state"])


def test_per_sample_inputs_of_different_batch_shapes(save_npz):
    """Two inputs whose dynamic batches differ: the stacked layout cannot say it, per-sample can."""
    model = _typed_model({"a": (TensorProto.FLOAT, ["N", 4]), "b": (TensorProto.FLOAT, ["M", 4])})
    arrays = {
        f"{k}/{n}": np.ones((size, 4), np.float32) for k in range(2) for n, size in (("a", 1), ("b", 3))
    }
    assert load_calibration(save_npz(**arrays), model).shapes == {"a": (1, 4), "b": (3, 4)}


def test_per_sample_missing_input_names_the_feed(save_npz):
    feeds = _silero_feeds(3)
    del feeds["1/sr"]
    err = _error(save_npz(**feeds), _typed_model(SILERO_LIKE))
    assert (err.detail["input"], err.detail["feed"]) == ("sr", 1)
    assert "feed 1 has no array for input 'sr'" in err.message


def test_per_sample_shape_change_names_the_feed(save_npz):
    feeds = _silero_feeds(3)
    feeds["2/input"] = np.zeros((1, 512), np.float32)
    err = _error(save_npz(**feeds), _typed_model(SILERO_LIKE))
    assert (err.detail["input"], err.detail["feed"]) == ("input", 2)
    assert "every feed of an input has one shape" in err.message


def test_per_sample_wrong_rank_and_dtype_and_values(save_npz):
    model = _typed_model(SILERO_LIKE)
    feeds = _silero_feeds(2)
    feeds["0/state"] = np.zeros((1, 128), np.float32)
    err = _error(save_npz(**feeds), model)
    assert err.message == "input 'state' expects (2, ?, 128), got (1, 128) in feed 0"
    feeds = _silero_feeds(2)
    feeds["1/sr"] = np.array(16000.0)
    err = _error(save_npz(**feeds), model)
    assert (err.detail["input"], err.detail["feed"]) == ("sr", 1) and "integer samples" in err.message
    feeds = _silero_feeds(3)
    feeds["2/input"][0, 7] = np.nan
    err = _error(save_npz(**feeds), model)
    assert (err.detail["input"], err.detail["feed"]) == ("input", 2) and "non-finite" in err.message


def test_per_sample_unknown_input_is_named(save_npz):
    feeds = {**_silero_feeds(1), "0/labels": np.zeros(3, np.float32)}
    err = _error(save_npz(**feeds), _typed_model(SILERO_LIKE))
    assert (err.detail["input"], err.detail["feed"]) == ("labels", 0)


def test_scalar_input_in_the_stacked_layout_points_at_per_sample(save_npz):
    model = _typed_model(SILERO_LIKE)
    arrays = {
        "input": np.zeros((2, 576), np.float32),
        "state": np.zeros((2, 2, 128), np.float32),
        "sr": np.array([16000, 16000]),
    }
    err = _error(save_npz(**arrays), model)
    assert err.detail["input"] == "sr" and "per-sample layout" in err.message


def test_mixed_keys_are_stacked_and_say_how_per_sample_is_written(save_npz):
    err = _error(
        save_npz(**{"0/x": np.zeros((1, 64), np.float32), "x": np.zeros((1, 64))}), models.small_mlp()
    )
    assert "per-sample keys are '<k>/<input name>'" in err.message


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
    assert err.detail == {"field": "calibration", "input": "x"}


def test_wrong_rank(save_npz):
    err = _error(save_npz(x=np.zeros((4, 3, 32), np.float32)), relu_model({"x": ["N", 3, "H", "W"]}))
    assert err.message == "input 'x' expects (N, 3, ?, ?), got (4, 3, 32)"


def test_integer_samples_for_a_float_input_are_refused(save_npz):
    err = _error(save_npz(x=np.zeros((2, 64), np.int64)), models.small_mlp())
    assert err.detail["input"] == "x"
    assert "int64" in err.message and "float" in err.message


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_non_finite_values_are_refused(save_npz, bad):
    samples = np.zeros((3, 64), np.float64)
    samples[1, 5] = bad
    err = _error(save_npz(x=samples), models.small_mlp())
    assert err.detail == {"field": "calibration", "input": "x", "sample": 1}
    assert "1 non-finite" in err.message


def test_empty_batch_is_refused(save_npz):
    err = _error(save_npz(x=np.zeros((0, 64), np.float32)), models.small_mlp())
    assert err.detail["input"] == "x"
    assert "at least one sample" in err.message


def test_static_batch_takes_whole_batches(save_npz):
    model = relu_model({"x": [4, 8]})
    loaded = load_calibration(save_npz(x=np.arange(80, dtype=np.float32).reshape(10, 8)[:8]), model)
    assert (loaded.batch, loaded.feed_count(), loaded.shapes) == (4, 2, {"x": (4, 8)})
    err = _error(save_npz(x=np.zeros((6, 8), np.float32)), model)
    assert "multiple of its static batch 4" in err.message


def test_short_last_feed_wraps_around(save_npz):
    """A held-out part that is not a whole number of static batches wraps within itself."""
    model = relu_model({"x": [4, 2]})
    samples = np.arange(24, dtype=np.float32).reshape(12, 2)
    calib, held = load_calibration(save_npz(x=samples), model).split_holdout(6)
    assert (calib.samples, held.samples, held.feed_count()) == (6, 6, 2)
    np.testing.assert_array_equal(list(held.feeds())[1][0], samples[[10, 11, 6, 7]])


def test_different_static_batches_need_the_per_sample_layout(save_npz):
    model = _typed_model({"a": (TensorProto.FLOAT, [2, 4]), "b": (TensorProto.FLOAT, ["N", 4])})
    err = _error(save_npz(a=np.zeros((4, 4), np.float32), b=np.zeros((4, 4), np.float32)), model)
    assert "use the per-sample layout" in err.message


def test_inputs_must_have_the_same_number_of_samples(save_npz):
    path = save_npz(x=np.zeros((3, 16, 64, 64), np.float32), gate=np.zeros((2, 16, 64, 64), np.float32))
    err = _error(path, models.seed_mul_sigmoid())
    assert "same number of samples" in err.message
    assert err.detail["input"] == "gate"


def test_holdout_larger_than_the_data_is_named():
    loaded = CalibrationSet.from_arrays(
        {"x": np.zeros((3, 64), np.float32)}, model_inputs(models.small_mlp())
    )
    with pytest.raises(CalibrationError) as err:
        loaded.split_holdout(3)
    assert err.value.detail == {"field": "holdout_samples"}


def test_unpacked_size_limit_comes_from_the_headers(save_npz):
    from worker.frontend.npz import NpzArchive

    path = save_npz(x=np.zeros((64, 64), np.float32))
    with pytest.raises(CalibrationError, match="bytes unpacked"):
        CalibrationSet.open(NpzArchive(path), model_inputs(models.small_mlp()), max_unpacked_bytes=1024)


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
