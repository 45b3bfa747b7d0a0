"""Every pass keeps the TIR functions the ONNX importer adds (`mirror_pad` for a reflect Pad) beside
main; a SAME conv no longer brings one (worker/converters/auto_pad.py)."""

from __future__ import annotations

import pytest

import tests.models as models
from tests.quantize.conftest import ACCURATE, cosine, quantize, run_artifact, run_onnx


@pytest.mark.parametrize("conversions", ["disabled", "enabled", "fully_integral"])
def test_importer_primfuncs_survive_the_pipeline(tmp_path, conversions):
    model = models.importer_primfuncs()
    calibration = models.random_calibration(model, 8, 0)
    result = quantize(
        tmp_path, model, calibration, calibrate_mode="max", partition_conversions=conversions, **ACCURATE
    )
    script = result.relax_script.read_text()
    assert "def mirror_pad(" in script
    x = calibration["x"][:1]
    assert cosine(run_artifact(result.artifact, [x])[0], run_onnx(model, {"x": x})[0]) >= 0.99
    layers = result.report["accuracy"]["layers"]
    assert layers, "the per-layer debug module (which calls mirror_pad) was built and run"
