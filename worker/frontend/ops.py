"""Which ONNX ops we can take: TVM's importer's (a TVM-free list) and our converters'.

Checked on the parsed model before anything expensive (queueing, simplification, calibration), so
a model with an op nobody converts is refused in milliseconds with every such op named and counted.
"""

from __future__ import annotations

from collections import Counter

import onnx

from worker import converters
from worker.errors import UnsupportedOpError
from worker.frontend.importer_ops import IMPORTER_OPS
from worker.frontend.model import all_nodes

#: Every op type the front door accepts: the importer's, and those our converters rewrite away.
SUPPORTED_OPS = IMPORTER_OPS | converters.CONVERTED_OPS


def unsupported_ops(model: onnx.ModelProto, supported: frozenset[str] = SUPPORTED_OPS) -> dict[str, int]:
    """Op type -> node count (subgraphs included) of every op not in `supported`, sorted by name."""
    counts = Counter(node.op_type for node in all_nodes(model.graph) if node.op_type not in supported)
    return dict(sorted(counts.items()))


def check_supported_ops(model: onnx.ModelProto, supported: frozenset[str] = SUPPORTED_OPS) -> None:
    """Raise E_UNSUPPORTED_OP listing every op (with its count) that neither TVM's importer nor our
    converters handle."""
    unknown = unsupported_ops(model, supported)
    if not unknown:
        return
    listed = ", ".join(f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in unknown.items())
    raise UnsupportedOpError(
        f"TVM's ONNX importer has no converter for {listed}, and tvmq converts none of them; replace "
        f"{'this op' if len(unknown) == 1 else 'these ops'} before exporting",
        field="model",
        op=next(iter(unknown)),
        ops=unknown,
    )
