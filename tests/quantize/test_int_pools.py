"""Integer average pools stay int32: the int32 arithmetic after them builds and is exact."""

from __future__ import annotations

import pytest

import tests.models as models
from tests.quantize.conftest import ACCURATE, INTEGRAL, cosine, quantize, run_artifact, run_onnx


@pytest.mark.parametrize(
    "qconfig",
    [
        pytest.param({"preset": "relay", **INTEGRAL}, id="relay-power2-shifts"),
        pytest.param({**ACCURATE, "calibrate_mode": "max"}, id="max-per-channel"),
        pytest.param({**ACCURATE, "calibrate_mode": "max", "nbit_activation": 8}, id="int8-activations"),
    ],
)
def test_avg_pool_then_int32_ops_build_and_match(tmp_path, qconfig):
    model = models.pool_chain()
    calibration = models.random_calibration(model, 8, 0)
    result = quantize(tmp_path / "q", model, calibration, **qconfig)
    assert result.report["integrality"]["fully_integral"] is True
    x = calibration["x"][:1]
    got = run_artifact(result.artifact, [x])[0]
    simulated = quantize(tmp_path / "sim", model, calibration, **{**qconfig, "do_simulation": True})
    # the simulation fake-quantizes every operand like realize does; the integer pool differs from
    # its float pool by at most 1/256 of a step, the int32 results by their finer output grid
    assert cosine(got, run_artifact(simulated.artifact, [x])[0]) >= 0.999
    if qconfig.get("calibrate_mode") == "max":
        assert cosine(got, run_onnx(model, {"x": x})[0]) >= 0.99
