"""TVM's ONNX importer: the simplified model becomes a Relax module.

Ops TVM lacks are rewritten first (worker/converters), here rather than before simplification:
the recurrent converters unroll over sequence lengths that only the fixed, simplified shapes make
static. TVM is imported only inside `import_relax`, so that everything else in the front door stays
cheap for the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from worker import converters
from worker.errors import ModelImportError, UnsupportedOpError
from worker.frontend.importer_ops import IMPORTER_OPS
from worker.frontend.ops import check_supported_ops
from worker.frontend.simplify import reason_of
from worker.frontend.specialize import undecided_inputs

if TYPE_CHECKING:
    import tvm


def import_relax(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> tvm.IRModule:
    """Convert the model to Relax with the weights bound as constants."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    model = converters.rewrite(model)
    check_supported_ops(model, IMPORTER_OPS)  # what our converters rewrite is gone by now
    try:
        return from_onnx(
            model, shape_dict={k: list(v) for k, v in shapes.items()}, keep_params_in_input=False
        )
    except tvm.error.OpNotImplemented as exc:
        raise UnsupportedOpError(f"TVM's ONNX importer: {reason_of(exc)}", reason=reason_of(exc)) from exc
    except Exception as exc:
        raise ModelImportError(
            f"TVM's ONNX importer failed on the simplified model: {reason_of(exc)}{_if_hint(model)}",
            reason=reason_of(exc),
        ) from exc


def _if_hint(model: onnx.ModelProto) -> str:
    """Why an If may still be there: TVM imports both branches for the fixed shapes."""
    names = undecided_inputs(model)
    if not names:
        return ""
    listed = ", ".join(f"'{n}'" for n in names)
    return (
        f" (the model has an If on the integer input(s) {listed}; TVM imports both branches for the "
        "fixed input shapes, and one written for other shapes fails there. Calibration data in which "
        "every sample gives each of them one value specialises the If to the branch taken)"
    )
