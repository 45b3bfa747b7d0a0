"""The ONNX file itself: parse it safely and describe the inputs a caller feeds.

Untrusted input is checked before anything touches it: external-data references are refused without
opening any path named in the model, and every real input must declare a tensor shape (the batch
rule and the calibration contract are defined against it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto

from worker.errors import ExternalDataError, ModelError

#: A model input's dims as declared: an int for a static dim, None for a dynamic one
#: (symbolic name, 0, -1 or missing).
Dims = tuple[int | None, ...]

#: What a model input holds, which decides how calibration samples may be typed and whether the
#: quantizer may touch it: floats are quantized, integers (ids, bytes, lengths) and booleans never.
Kind = Literal["float", "int", "bool"]

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
_INT_TYPES = {
    TensorProto.INT8,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
    TensorProto.UINT16,
    TensorProto.UINT32,
    TensorProto.UINT64,
}


@dataclass(frozen=True)
class ModelInput:
    """One real graph input (initializers excluded), as the artifact takes it."""

    name: str
    dtype: np.dtype
    kind: Kind
    dims: Dims

    def show(self, first: str | None = None) -> str:
        """The declared shape for messages, "?" for dynamic dims; `first` labels axis 0 (e.g. "N")."""
        labels = ["?" if d is None else str(d) for d in self.dims]
        if first is not None and labels:
            labels[0] = first
        return "(" + ", ".join(labels) + ")"


def load_onnx(path: Path) -> onnx.ModelProto:
    """Parse and check an ONNX file, refusing tensors stored outside it."""
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(
            f"{Path(path).name} is not a readable ONNX model: {exc}", field="model", reason=str(exc)
        ) from exc
    external = next(_external_tensors(model), None)
    if external is not None:
        tensor_name, where = external
        raise ExternalDataError(
            f"tensor '{tensor_name}' ({where}) is stored in an external file; tvmq only accepts "
            "self-contained models. Re-save it with all tensors inside the .onnx file "
            "(onnx.save_model(model, path, save_as_external_data=False)).",
            field="model",
            tensor=tensor_name,
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"the ONNX model is invalid: {exc}", field="model", reason=str(exc)) from exc
    return model


def model_inputs(model: onnx.ModelProto) -> list[ModelInput]:
    """The inputs a caller feeds, in ONNX order, each with a declared tensor shape and a numeric type."""
    inputs = [_model_input(vi) for vi in _real_inputs(model)]
    if not inputs:
        raise ModelError("the model has no graph inputs to feed", field="model")
    return inputs


def input_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs a caller feeds, in ONNX order (initializers listed as inputs excluded)."""
    return [vi.name for vi in _real_inputs(model)]


def output_names(model: onnx.ModelProto) -> list[str]:
    return [vi.name for vi in model.graph.output]


def input_dims(model: onnx.ModelProto) -> dict[str, Dims]:
    """Each real input's declared dims, None where the dim is dynamic."""
    return {spec.name: spec.dims for spec in model_inputs(model)}


def dim_label(model: onnx.ModelProto, name: str, axis: int) -> str:
    """The symbolic name of a dynamic dim, for messages ("'height'", or "'?'" when unnamed)."""
    vi = next(vi for vi in model.graph.input if vi.name == name)
    return repr(vi.type.tensor_type.shape.dim[axis].dim_param or "?")


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of the graph and of its subgraphs (If branches, Loop bodies), depth first."""
    for g in _all_graphs(graph):
        yield from g.node


def _model_input(vi: onnx.ValueInfoProto) -> ModelInput:
    tensor_type = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        raise ModelError(
            f"input '{vi.name}' has no declared tensor shape; export the model with input shapes",
            field="model",
            input=vi.name,
        )
    elem = tensor_type.elem_type
    if elem in _FLOAT_TYPES:
        kind: Kind = "float"
    elif elem in _INT_TYPES:
        kind = "int"
    elif elem == TensorProto.BOOL:
        kind = "bool"
    else:
        raise ModelError(
            f"input '{vi.name}' has element type {TensorProto.DataType.Name(elem)}; tvmq takes numeric "
            "(float, integer or bool) inputs",
            field="model",
            input=vi.name,
        )
    dims = tuple(d.dim_value if d.dim_value > 0 else None for d in tensor_type.shape.dim)
    return ModelInput(vi.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)), kind, dims)


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initialized = {t.name for t in model.graph.initializer}
    initialized |= {t.values.name for t in model.graph.sparse_initializer}
    return [vi for vi in model.graph.input if vi.name not in initialized]


def _all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _all_graphs(sub)


def _external_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, str]]:
    """(tensor name, where it sits) for every tensor whose bytes live outside the model file."""
    for graph in _all_graphs(model.graph):
        tensors = [(t, "initializer") for t in graph.initializer]
        for sparse in graph.sparse_initializer:
            tensors += [(sparse.values, "sparse initializer"), (sparse.indices, "sparse initializer")]
        for node in graph.node:
            for attr in node.attribute:
                where = f"attribute '{attr.name}' of {node.op_type} node '{node.name}'"
                attr_tensors = ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
                attr_tensors += [
                    s.values for s in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else [])
                ]
                attr_tensors += [s.values for s in attr.sparse_tensors]
                tensors += [(t, where) for t in attr_tensors]
        for tensor, where in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
                yield tensor.name or "<unnamed>", where
