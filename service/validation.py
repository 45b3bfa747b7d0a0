"""Cheap checks run by the API before a job is queued, so bad input fails in milliseconds with a
422 naming the field or input, instead of minutes later in a worker. ONNX is parsed with `onnx`
only (the API never imports TVM); calibration arrays are checked from their .npy headers without
unpacking the data."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from worker.errors import CalibrationError, ExternalDataError, ModelError
from worker.qconfig import QConfig


@dataclass(frozen=True)
class ModelInput:
    name: str
    elem_type: int
    shape: tuple[int | None, ...] | None  # None: rank unknown; None entries: symbolic dims

    @property
    def is_float(self) -> bool:
        return self.elem_type in _FLOAT_TYPES


_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


def _tensors_with_external_data(model: onnx.ModelProto) -> list[str]:
    graphs = [model.graph]
    names = []
    while graphs:
        graph = graphs.pop()
        names += [t.name for t in graph.initializer if t.data_location == TensorProto.EXTERNAL]
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == TensorProto.EXTERNAL:
                    names.append(attr.t.name or node.name)
                graphs += [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
    return names


def model_inputs(path: Path) -> list[ModelInput]:
    """The graph's real inputs (initializers excluded), or ModelError/ExternalDataError."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"the model is not a readable ONNX file: {exc}", field="model") from None
    external = _tensors_with_external_data(model)
    if external:
        raise ExternalDataError(
            f"the model keeps {len(external)} tensor(s) in external data files (e.g. {external[0]!r}); "
            "save it as one self-contained .onnx file",
            field="model",
            tensor=external[0],
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"the ONNX model is invalid: {exc}", field="model") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = None
        if tensor_type.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
        inputs.append(ModelInput(value.name, tensor_type.elem_type, shape))
    if not inputs:
        raise ModelError("the model has no graph inputs to feed", field="model")
    return inputs


def _array_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """name -> (shape, dtype, unpacked bytes), read from each member's .npy header only."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise CalibrationError(
            "calibration must be an .npz archive (numpy.savez) keyed by model input name",
            field="calibration",
        ) from None
    headers = {}
    with archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            try:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(member)
            except Exception as exc:
                raise CalibrationError(
                    f"calibration entry {name!r} is not a numpy array: {exc}", field="calibration", input=name
                ) from None
            headers[name] = (shape, dtype, info.file_size)
    return headers


def check_calibration(path: Path, inputs: list[ModelInput], max_unpacked_bytes: int) -> int:
    """Check the .npz against the model's inputs; the number of samples it holds."""
    headers = _array_headers(path)
    names = {i.name for i in inputs}
    missing = sorted(names - headers.keys())
    if missing:
        raise CalibrationError(
            f"calibration has no array for model input {missing[0]!r} (it has {sorted(headers)})",
            field="calibration",
            input=missing[0],
        )
    extra = sorted(headers.keys() - names)
    if extra:
        raise CalibrationError(
            f"calibration array {extra[0]!r} is not a model input (inputs: {sorted(names)})",
            field="calibration",
            input=extra[0],
        )
    unpacked = sum(size for _, _, size in headers.values())
    if unpacked > max_unpacked_bytes:
        raise CalibrationError(
            f"calibration arrays take {unpacked} bytes unpacked, more than the limit of {max_unpacked_bytes}",
            field="calibration",
        )
    samples = set()
    for spec in inputs:
        shape, dtype, _ = headers[spec.name]
        _check_array(spec, shape, dtype)
        samples.add(shape[0])
    if len(samples) != 1:
        raise CalibrationError(
            f"calibration arrays hold different sample counts {sorted(samples)}; stack the same samples "
            "for every input along axis 0",
            field="calibration",
        )
    return samples.pop()


def _check_array(spec: ModelInput, shape: tuple[int, ...], dtype: np.dtype) -> None:
    where = {"field": "calibration", "input": spec.name}
    if dtype.hasobject:
        raise CalibrationError(f"calibration array {spec.name!r} holds Python objects", **where)
    if spec.is_float and dtype.kind != "f":
        raise CalibrationError(
            f"calibration array {spec.name!r} has dtype {dtype}; the model input is float, send float32",
            **where,
        )
    expected = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(spec.elem_type))
    if not spec.is_float and dtype != expected:
        raise CalibrationError(
            f"calibration array {spec.name!r} has dtype {dtype}; the model input is {expected}", **where
        )
    if not shape or shape[0] < 1:
        raise CalibrationError(
            f"calibration array {spec.name!r} has shape {shape}; stack samples along axis 0", **where
        )
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape):
        raise CalibrationError(
            f"calibration array {spec.name!r} has rank {len(shape)} (shape {shape}), the model input "
            f"has rank {len(spec.shape)} (shape {_show(spec.shape)}); samples stack along axis 0",
            **where,
        )
    for axis, (got, want) in enumerate(zip(shape[1:], spec.shape[1:], strict=True), start=1):
        if want is not None and got != want:
            raise CalibrationError(
                f"calibration array {spec.name!r} has shape {shape}, the model input is {_show(spec.shape)} "
                f"(axis {axis}: {got} != {want})",
                **where,
                axis=axis,
            )


def _show(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def check_calibration_required(qconfig: QConfig, has_calibration: bool) -> None:
    if not has_calibration and qconfig.calibrate_mode != "global_scale":
        raise CalibrationError(
            f"calibrate_mode {qconfig.calibrate_mode!r} needs calibration data: upload an .npz as "
            "'calibration', or use calibrate_mode 'global_scale'",
            field="calibration",
        )
