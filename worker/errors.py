"""The QuantizeError family: every failure a user can cause or act on has a stable code.

The code is what clients and tests match on (CLI prints `error[CODE]: message`, the API returns it
in a JSON problem body); the message says what to change. `detail` names the failing field, input
or op so the HTTP layer can point at it without parsing the message. Codes only: the HTTP layer
(service/problems.py) decides which status each code is.
"""

from __future__ import annotations

from typing import Any


class QuantizeError(Exception):
    """Base of all user-facing pipeline errors."""

    code = "E_INTERNAL"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = {k: v for k, v in detail.items() if v is not None}

    def one_line(self) -> str:
        return f"error[{self.code}]: {' '.join(self.message.split())}"


class QConfigError(QuantizeError):
    """A qconfig key is unknown or a value is out of range (detail: field)."""

    code = "E_QCONFIG"


class ModelError(QuantizeError):
    """The ONNX file does not parse or is not a valid model (detail: reason)."""

    code = "E_MODEL_INVALID"


class ExternalDataError(QuantizeError):
    """The model references tensors stored outside the file; we never follow such paths."""

    code = "E_EXTERNAL_DATA"


class CalibrationError(QuantizeError):
    """Calibration data is missing, unreadable or does not match the model (detail: input)."""

    code = "E_CALIBRATION"


class ModelImportError(QuantizeError):
    """TVM's ONNX importer rejected the (simplified) model."""

    code = "E_IMPORT"


class UnsupportedOpError(QuantizeError):
    """An op that the importer or the pipeline cannot handle (detail: op)."""

    code = "E_UNSUPPORTED_OP"


class NotFullyIntegralError(QuantizeError):
    """`partition_conversions=fully_integral` and float ops remain in the quantized core."""

    code = "E_NOT_FULLY_INTEGRAL"


class BuildError(QuantizeError):
    """tvm.compile or export failed; usually a target problem (detail: target)."""

    code = "E_BUILD"


class InternalError(QuantizeError):
    """A bug in tvmq: a state the pipeline should never reach. Reported with what was being done."""

    code = "E_INTERNAL"
