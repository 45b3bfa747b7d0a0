"""The ONNX front door: everything between a user's files and a Relax module.

model → ops (refuse what nobody converts) → calibration (the data contract) → shapes (fix every
input shape) → specialize (an If on a constant integer input becomes its taken branch; `guard`
makes the artifact refuse other values) → simplify → importer (our rewrites of ops TVM lacks,
then TVM's from_onnx).
`upload.open_upload` is the upload contract shared by the API and the pipeline.

TVM-free at import (the service imports this package); only `import_relax` loads TVM.
"""

from worker.frontend.calibration import CalibrationSet, load_calibration
from worker.frontend.importer import import_relax
from worker.frontend.model import (
    Dims,
    ModelInput,
    input_dims,
    input_names,
    load_onnx,
    model_inputs,
    output_names,
)
from worker.frontend.ops import SUPPORTED_OPS, check_supported_ops, unsupported_ops
from worker.frontend.shapes import fixed_input_shapes
from worker.frontend.simplify import simplify
from worker.frontend.specialize import Pin, specialize
from worker.frontend.upload import Upload, open_upload, require_calibration

__all__ = [
    "SUPPORTED_OPS",
    "CalibrationSet",
    "Dims",
    "ModelInput",
    "Pin",
    "Upload",
    "check_supported_ops",
    "fixed_input_shapes",
    "import_relax",
    "input_dims",
    "input_names",
    "load_calibration",
    "load_onnx",
    "model_inputs",
    "open_upload",
    "output_names",
    "require_calibration",
    "simplify",
    "specialize",
    "unsupported_ops",
]
