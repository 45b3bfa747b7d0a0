"""fixed_input_shapes: the calibration contract's rules for turning dynamic dims into static ones."""

from __future__ import annotations

import numpy as np
import pytest

import tests.models as models
from tests.frontend.helpers import relu_model
from worker.errors import CalibrationError
from worker.frontend import CalibrationSet, fixed_input_shapes, load_onnx, model_inputs


def _data(model, **arrays: np.ndarray) -> CalibrationSet:
    return CalibrationSet.from_arrays(arrays, model_inputs(model))


@pytest.mark.parametrize("batch", ["N", None, 0, -1])
def test_dynamic_batch_is_compiled_as_one(batch):
    model = relu_model({"x": [batch, 3, 8, 8]})
    assert fixed_input_shapes(model, _data(model, x=np.zeros((5, 3, 8, 8), np.float32))) == {
        "x": (1, 3, 8, 8)
    }
    assert fixed_input_shapes(model, None) == {"x": (1, 3, 8, 8)}


def test_static_batch_stays():
    model = relu_model({"x": [4, 8]})
    assert fixed_input_shapes(model, _data(model, x=np.zeros((8, 8), np.float32))) == {"x": (4, 8)}


def test_dynamic_spatial_dims_come_from_the_calibration_arrays():
    model = load_onnx(models.exported_model("unet_small"))
    calibration = _data(model, images=np.zeros((6, 3, 24, 40), np.float32))
    assert fixed_input_shapes(model, calibration) == {"images": (1, 3, 24, 40)}


def test_dynamic_spatial_dims_without_calibration_are_an_error():
    model = load_onnx(models.exported_model("unet_small"))
    with pytest.raises(CalibrationError, match="calibration data is needed") as err:
        fixed_input_shapes(model, None)
    assert err.value.detail == {"input": "images"}
    assert "'height'" in err.value.message


def test_per_sample_feeds_fix_every_dynamic_dim_including_the_batch():
    model = relu_model({"x": ["N", 3, "H", "W"]})
    feeds = {f"{k}/x": np.zeros((2, 3, 5, 7), np.float32) for k in range(3)}
    assert fixed_input_shapes(model, _data(model, **feeds)) == {"x": (2, 3, 5, 7)}


def test_every_input_in_onnx_order():
    model = models.seed_mul_sigmoid()
    assert list(fixed_input_shapes(model, None).items()) == [
        ("x", (1, 16, 64, 64)),
        ("gate", (1, 16, 64, 64)),
    ]
