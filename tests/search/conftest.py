"""Fixtures for the search tests: the real pipeline with a `search` block on the models of
models.py, one run per (model, qconfig) shared by the tests that read it; the service's live
worker for the job-record test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tests.search import models
from tests.service.conftest import live, make_settings  # noqa: F401 (fixtures the job test uses)
from worker.pipeline import PipelineResult, run_pipeline
from worker.qconfig import QConfig

#: per-channel max weights, bench kept short: what every search starts from
BASE: dict[str, Any] = {"calibrate_mode": "max", "per_channel": True, "weight_scale": "max", "bench_runs": 2}
#: 200 samples: 40 held out (N // 5), one top-1 mismatch costs 2.5 %
SAMPLES = 200


def run_search(
    tmp: Path, sensitive: int, search: dict[str, Any], validation: bool = False, **qconfig: Any
) -> PipelineResult:
    tmp.mkdir(parents=True, exist_ok=True)
    model = tmp / "model.onnx"

    onnx.save(models.outlier_mlp(sensitive), model)
    calibration = tmp / "calibration.npz"
    np.savez(calibration, x=models.samples(SAMPLES, 1))
    validation_path = None
    if validation:
        validation_path = tmp / "validation.npz"
        np.savez(validation_path, x=models.samples(64, 2))
    config = QConfig(**{**BASE, **qconfig, "search": search})
    return run_pipeline(model, calibration, config, tmp / "out", validation_path=validation_path)
