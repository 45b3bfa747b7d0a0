"""The qconfig's defaults (data-driven, every layer quantized) and the "relay" preset."""

from __future__ import annotations

import pytest

from worker.errors import CalibrationError, QConfigError
from worker.frontend.upload import require_calibration
from worker.qconfig import QConfig, parse_qconfig

#: `tvm.relay.quantize.qconfig()`'s defaults, field by field (TVM <= 0.14, relay/quantize/quantize.py),
#: plus per_channel, which Relay did not have (its weights were always per-tensor).
RELAY_DEFAULTS = {
    "nbit_input": 8,
    "nbit_weight": 8,
    "nbit_activation": 32,
    "dtype_input": "int8",
    "dtype_weight": "int8",
    "dtype_activation": "int32",
    "calibrate_mode": "global_scale",
    "global_scale": 8.0,
    "weight_scale": "power2",
    "skip_conv_layers": [0],
    "skip_dense_layer": True,
    "do_simulation": False,
    "round_for_shift": True,
    "debug_enabled_ops": None,
    "rounding": "UPWARD",
    "calibrate_chunk_by": -1,
    "partition_conversions": "disabled",
    "per_channel": False,
}


@pytest.mark.parametrize("text", [None, "", "{}"])
def test_empty_qconfig_calibrates_from_data_and_quantizes_everything(text: str | None) -> None:
    q = parse_qconfig(text)
    assert q.preset == "tvmq"
    assert q.calibrate_mode == "max"
    assert (q.weight_scale, q.per_channel) == ("max", True)
    assert (q.skip_conv_layers, q.skip_dense_layer) == ([], False)
    assert q.partition_conversions == "enabled"
    assert (q.nbit_input, q.nbit_weight, q.nbit_activation) == (8, 8, 32)


@pytest.mark.parametrize(("field", "value"), sorted(RELAY_DEFAULTS.items()))
def test_relay_preset_has_every_relay_default(field: str, value: object) -> None:
    assert getattr(parse_qconfig({"preset": "relay"}), field) == value


def test_explicit_keys_override_the_preset() -> None:
    q = parse_qconfig('{"preset": "relay", "calibrate_mode": "mse", "skip_conv_layers": []}')
    assert (q.calibrate_mode, q.skip_conv_layers) == ("mse", [])
    assert (q.weight_scale, q.skip_dense_layer) == ("power2", True)  # the rest is still Relay's
    q = parse_qconfig({"per_channel": False, "partition_conversions": "disabled"})
    assert (q.per_channel, q.partition_conversions, q.weight_scale) == (False, "disabled", "max")


def test_applied_qconfig_reproduces_itself() -> None:
    """The report records model_dump(): parsing it again must give the same config, preset or not."""
    for data in ({}, {"preset": "relay"}, {"preset": "relay", "per_channel": True}):
        q = parse_qconfig(data)
        assert parse_qconfig(q.model_dump(mode="json")) == q


def test_unknown_preset_is_a_qconfig_error() -> None:
    with pytest.raises(QConfigError) as info:
        parse_qconfig({"preset": "tensorrt"})
    assert info.value.detail["field"] == "preset"


def test_mse_is_a_mode() -> None:
    assert QConfig(calibrate_mode="mse").calibrate_mode == "mse"


@pytest.mark.parametrize(
    ("data", "refused"),
    [
        ({}, True),
        ({"calibrate_mode": "mse"}, True),
        ({"preset": "relay"}, False),
        ({"calibrate_mode": "global_scale"}, False),
    ],
)
def test_without_calibration_data_only_global_scale_runs(data: dict, refused: bool) -> None:
    qconfig = parse_qconfig(data)
    if not refused:
        require_calibration(qconfig, has_calibration=False)
        return
    with pytest.raises(CalibrationError, match=r"needs calibration data.*global_scale") as info:
        require_calibration(qconfig, has_calibration=False)
    assert info.value.detail["field"] == "calibration"
    require_calibration(qconfig, has_calibration=True)
