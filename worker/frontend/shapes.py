"""The static input shapes we compile for.

Real exports have dynamic dims that TVM's importer cannot take; the calibration contract fixes them
(see calibration.py). Without calibration data (global_scale) a dynamic batch is compiled as 1 and
any other dynamic dim is an error naming it.
"""

from __future__ import annotations

import onnx

from worker.errors import CalibrationError
from worker.frontend.calibration import CalibrationSet
from worker.frontend.model import dim_label, model_inputs


def fixed_input_shapes(
    model: onnx.ModelProto, calibration: CalibrationSet | None
) -> dict[str, tuple[int, ...]]:
    """Input name -> static shape, in ONNX input order."""
    if calibration is not None:
        return dict(calibration.shapes)
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in model_inputs(model):
        fixed = []
        for axis, dim in enumerate(spec.dims):
            if dim is not None:
                fixed.append(dim)
            elif axis == 0:
                fixed.append(1)
            else:
                raise CalibrationError(
                    f"input '{spec.name}' has a dynamic dimension {axis} "
                    f"({dim_label(model, spec.name, axis)}); calibration data is needed to fix it: pass "
                    "a calibration .npz whose arrays have the size to compile for",
                    input=spec.name,
                )
        shapes[spec.name] = tuple(fixed)
    return shapes
