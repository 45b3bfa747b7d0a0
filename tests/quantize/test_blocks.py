"""Blocks of real networks pass `fully_integral`: every op between the input quantization and the
output dequantization runs in integers (tables for hard-swish, hard-sigmoid's clip, SiLU and GELU,
integer softmax and layer norm), with cosine >= 0.99 to the float model on held-out inputs."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import onnx
import pytest

from tests.models import random_calibration
from tests.quantize.blocks import mobilenet_v3_block, transformer_block, yolo_block
from tests.quantize.conftest import ACCURATE, cosine, quantize, run_artifact, run_onnx

pytestmark = pytest.mark.slow

#: block -> the functions its report must list as computed in integers
BLOCKS = {
    "mobilenet_v3": (mobilenet_v3_block, {"hard_swish"}),
    "yolo": (yolo_block, {"silu"}),
    "transformer": (transformer_block, {"gelu", "softmax", "layer_norm"}),
    # the layer norms as ReduceMean / Sub / Pow / Sqrt / Div: folded into the integer layer norm
    "transformer_decomposed_norm": (
        partial(transformer_block, decomposed_norm=True),
        {"gelu", "softmax", "layer_norm"},
    ),
}


@pytest.mark.parametrize("name", list(BLOCKS))
def test_block_is_fully_integral_and_accurate(name: str, tmp_path: Path) -> None:
    build, functions = BLOCKS[name]
    model: onnx.ModelProto = build()
    result = quantize(
        tmp_path,
        model,
        random_calibration(model, 24, seed=0),
        calibrate_mode="max",
        partition_conversions="fully_integral",
        **ACCURATE,
    )
    integrality = result.report["integrality"]
    assert integrality["fully_integral"] and not integrality["float_in_core"]
    model_floats = [
        op for op in integrality["ops"] if op["reason"] and op["group"] not in ("prefix", "suffix")
    ]
    assert not model_floats, "no op of the model stays float (only the input and output conversions)"
    tables = integrality["tables"]
    assert functions <= {t["function"] for t in tables}
    # rounding within half an output step; entries beyond the calibrated output range are counted
    assert all(t["max_error_steps"] <= 0.5 + 1e-6 for t in tables if t["max_error_steps"] is not None)
    assert all(t["clipped_levels"] is not None for t in tables if t["form"].startswith("lookup"))
    inputs = random_calibration(model, 4, seed=1)["x"]
    for x in inputs:
        feed = x[None]
        assert cosine(run_onnx(model, {"x": feed})[0], run_artifact(result.artifact, [feed])[0]) >= 0.99
