"""Simplification: pin the input shapes and fold the graph until TVM's importer can take it.

Real exported models rarely import into TVM as they are: dynamic batch/spatial dims and
`Shape→Gather→Concat→Reshape` subgraphs defeat the importer. With every input shape fixed, onnxslim
folds those shape subgraphs into constants; if it fails, onnx shape inference plus our own constant
folding handles the common cases.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

from worker.errors import ModelImportError

#: Longest tool reason we pass on; TVM and onnxslim errors can carry whole backtraces.
_MAX_REASON_CHARS = 800


def simplify(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Pin the input shapes and fold the graph so shape subgraphs become constants.

    onnxslim does the job on every export we tried; if it fails we fall back to onnx shape inference
    plus our own constant folding, which handles the common Shape→Gather→Concat→Reshape case. The
    inputs stay exactly the model's (onnxslim drops inputs no node reads), because the artifact takes
    every ONNX input in ONNX order.
    """
    import onnxslim

    fixed = _with_fixed_shapes(model, shapes)
    try:
        slim = onnxslim.slim(
            copy.deepcopy(fixed),
            # a scalar input is static already, and "name:" (no dims) is not a shape onnxslim parses
            input_shapes=[f"{name}:{','.join(map(str, shape))}" for name, shape in shapes.items() if shape],
        )
    except Exception as exc:
        warnings.warn(
            f"onnxslim could not simplify the model ({reason_of(exc)}); falling back to onnx shape "
            "inference and constant folding",
            stacklevel=2,
        )
        try:
            slim = _fold_constants(onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True))
        except Exception as fold_exc:
            raise ModelImportError(
                f"the model could not be simplified for the fixed input shapes {shapes}: "
                f"{reason_of(fold_exc)}",
                reason=reason_of(fold_exc),
            ) from fold_exc
    del slim.graph.input[:]
    slim.graph.input.extend(vi for vi in fixed.graph.input if vi.name in shapes)
    return slim


def _with_fixed_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy with static input dims and no stale intermediate shapes (value_info dropped)."""
    fixed = copy.deepcopy(model)
    for vi in fixed.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[vi.name], strict=True):
                dim.Clear()
                dim.dim_value = size
    del fixed.graph.value_info[:]
    return fixed


def _fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every node computable ahead of time by an initializer, then drop dead nodes.

    A node folds when all its inputs are constants, and a Shape node also folds when the shape of
    its input is fully known; evaluation uses onnx's reference implementation.
    """
    graph = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    static = _static_shapes(model)
    opsets = list(model.opset_import)
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] in static:
            # ONNX Shape's start/end clamp and count from the end exactly like a Python slice
            span = {a.name: a.i for a in node.attribute}
            dims = np.array(static[node.input[0]], dtype=np.int64)
            consts[node.output[0]] = dims[span.get("start", 0) : span.get("end")]
        elif _foldable(node, consts):
            values = _run_node(node, {i: consts[i] for i in node.input if i}, opsets)
            consts.update((out, np.asarray(v)) for out, v in zip(node.output, values, strict=True))
        else:
            kept.append(node)
    used = {i for node in kept for i in node.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in consts.items() if name in used)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def _foldable(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> bool:
    has_subgraph = any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    )
    random = node.op_type.startswith("Random") or node.op_type in {"Bernoulli", "Multinomial"}
    return (
        node.domain in ("", "ai.onnx")
        and not has_subgraph
        and not random
        and all(not i or i in consts for i in node.input)
    )


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    infos = [*model.graph.input, *model.graph.value_info, *model.graph.output]
    shapes = {}
    for vi in infos:
        tensor_type = vi.type.tensor_type
        if tensor_type.HasField("shape") and all(d.dim_value > 0 for d in tensor_type.shape.dim):
            shapes[vi.name] = tuple(d.dim_value for d in tensor_type.shape.dim)
    return shapes


def _run_node(
    node: onnx.NodeProto, feeds: dict[str, np.ndarray], opsets: list[onnx.OperatorSetIdProto]
) -> list:
    """Evaluate one node with onnx's reference implementation, under the model's own opsets."""
    from onnx.reference import ReferenceEvaluator

    graph = onnx.helper.make_graph(
        [node],
        "fold",
        [
            onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in feeds.items()
        ],
        [onnx.helper.make_empty_tensor_value_info(o) for o in node.output],
    )
    return ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=opsets)).run(None, feeds)


def reason_of(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS] + " ..."
