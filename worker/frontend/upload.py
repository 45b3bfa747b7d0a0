"""The upload contract: what `POST /quantize` checks before queueing and the pipeline before any
work, in one place, so the two cannot drift.

Everything here is cheap and TVM-free: the model is parsed and checked (external data refused,
inputs with declared shapes, every op one the importer or our converters handle), the calibration
archive is checked against the model's inputs from its headers alone. The pipeline then reads the
values (finite floats, integers in range), which the API leaves to the worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import onnx

from worker.errors import CalibrationError, ModelError
from worker.frontend.calibration import CalibrationSet
from worker.frontend.model import ModelInput, load_onnx, model_inputs
from worker.frontend.npz import NpzArchive
from worker.frontend.ops import check_supported_ops
from worker.qconfig import QConfig


@dataclass
class Upload:
    model: onnx.ModelProto
    inputs: list[ModelInput]
    calibration: CalibrationSet | None
    #: samples the search scores trials on and the report evaluates (instead of the hold-out split)
    validation: CalibrationSet | None = None


def require_calibration(qconfig: QConfig, has_calibration: bool) -> None:
    if not has_calibration and qconfig.search is not None:
        raise CalibrationError(
            "a search compares calibrate modes and scores trials on held-out samples: upload "
            "calibration data as 'calibration'",
            field="calibration",
        )
    if not has_calibration and qconfig.calibrate_mode != "global_scale":
        raise CalibrationError(
            f"calibrate_mode {qconfig.calibrate_mode!r} needs calibration data: upload an .npz keyed by "
            "the model's inputs as 'calibration', or use calibrate_mode 'global_scale'",
            field="calibration",
        )


def check_feed_sizes(inputs: list[ModelInput], limit: int) -> None:
    """One feed of each input (dynamic dims as 1) must fit the unpacked calibration limit: the
    pipeline makes such feeds to verify the build, and a 1e9-element input only runs it out of memory."""
    for spec in inputs:
        size = math.prod(d or 1 for d in spec.dims) * spec.dtype.itemsize
        if size > limit:
            raise ModelError(
                f"input '{spec.name}' declares {size} bytes per feed {spec.show()}, more than the limit "
                f"of {limit} (MAX_CALIBRATION_UNPACKED_BYTES); export the model with smaller input shapes",
                field="model",
                input=spec.name,
            )


def open_upload(
    model_path: Path,
    calibration_path: Path | None,
    qconfig: QConfig,
    max_unpacked_bytes: int | None = None,
    validation_path: Path | None = None,
) -> Upload:
    """Check a submission; raises the QuantizeError naming the first thing wrong with it.

    A validation archive follows the calibration contract and must feed the shapes the calibration
    data fixes (the model is compiled for one shape)."""
    model = load_onnx(Path(model_path))  # what is wrong with the model first: it decides the rest
    inputs = model_inputs(model)
    if max_unpacked_bytes is not None:
        check_feed_sizes(inputs, max_unpacked_bytes)
    check_supported_ops(model)
    require_calibration(qconfig, calibration_path is not None)
    calibration = None
    if calibration_path is not None:
        calibration = CalibrationSet.open(NpzArchive(Path(calibration_path)), inputs, max_unpacked_bytes)
        calibration.split_holdout(qconfig.holdout_samples)  # headers only: refuses holdout >= N now
    validation = None
    if validation_path is not None:
        if calibration is None:
            raise CalibrationError(
                "validation samples are scored against a calibrated model: upload calibration data too",
                field="validation",
            )
        validation = _open_validation(Path(validation_path), inputs, calibration, max_unpacked_bytes)
    return Upload(model, inputs, calibration, validation)


def _open_validation(
    path: Path, inputs: list[ModelInput], calibration: CalibrationSet, max_unpacked_bytes: int | None
) -> CalibrationSet:
    try:
        validation = CalibrationSet.open(NpzArchive(path), inputs, max_unpacked_bytes)
    except CalibrationError as exc:
        raise CalibrationError(
            f"validation data: {exc.message}", **{**exc.detail, "field": "validation"}
        ) from None
    for name, shape in validation.shapes.items():
        if shape != calibration.shapes[name]:
            raise CalibrationError(
                f"validation input '{name}' feeds shape {shape}, the calibration data "
                f"{calibration.shapes[name]}: the model is compiled for the calibration's shape",
                field="validation",
                input=name,
            )
    return validation
