"""The ONNX front door: everything between a user's files and a Relax module.

Real exported models rarely import into TVM as they are: dynamic batch/spatial dims and
`Shape→Gather→Concat→Reshape` subgraphs defeat the importer. So we fix every input shape first
(from the calibration data and the batch rule of the calibration contract) and simplify the graph,
which folds those shape subgraphs into constants. Untrusted input is checked before anything
touches it: external-data references are refused without opening any path named in the model, and
`.npz` files are read without pickle.

TVM is imported only inside `import_relax` so that the service can validate uploads cheaply.
"""

from __future__ import annotations

import copy
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from worker import converters
from worker.errors import (
    CalibrationError,
    ExternalDataError,
    ModelError,
    ModelImportError,
    UnsupportedOpError,
)

if TYPE_CHECKING:
    import tvm

#: A model input's dims as declared: an int for a static dim, None for a dynamic one
#: (symbolic name, 0, -1 or missing).
Dims = tuple[int | None, ...]

#: Ops that TVM's importer handles outside its converter map.
_IMPORTER_BUILTIN_OPS = frozenset({"Constant", "If"})

#: Longest importer reason we pass on; TVM errors can carry whole C++ backtraces.
_MAX_REASON_CHARS = 800


def load_onnx(path: Path) -> onnx.ModelProto:
    """Parse and check an ONNX file, refusing tensors stored outside it."""
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{Path(path).name} is not a readable ONNX model: {exc}", reason=str(exc)) from exc
    external = next(_external_tensors(model), None)
    if external is not None:
        tensor_name, where = external
        raise ExternalDataError(
            f"tensor '{tensor_name}' ({where}) is stored in an external file; tvmq only accepts "
            "self-contained models. Re-save it with all tensors inside the .onnx file "
            "(onnx.save_model(model, path, save_as_external_data=False)).",
            tensor=tensor_name,
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"the ONNX model is invalid: {exc}", reason=str(exc)) from exc
    return model


def input_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs a caller feeds, in ONNX order (initializers listed as inputs excluded)."""
    return [vi.name for vi in _real_inputs(model)]


def output_names(model: onnx.ModelProto) -> list[str]:
    return [vi.name for vi in model.graph.output]


def input_dims(model: onnx.ModelProto) -> dict[str, Dims]:
    """Each real input's declared dims, None where the dim is dynamic."""
    dims: dict[str, Dims] = {}
    for vi in _real_inputs(model):
        tensor_type = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
            raise ModelError(
                f"input '{vi.name}' has no declared tensor shape; export the model with input shapes",
                input=vi.name,
            )
        dims[vi.name] = tuple(d.dim_value if d.dim_value > 0 else None for d in tensor_type.shape.dim)
    return dims


def load_calibration(path: Path | None, model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    """Read and validate calibration samples; None when no file is given (global_scale mode).

    Each array is a stack of samples along the batch axis, one array per model input, cast to float32.
    """
    if path is None:
        return None
    arrays = _read_npz(Path(path))
    dims = input_dims(model)
    missing = [name for name in dims if name not in arrays]
    extra = [name for name in arrays if name not in dims]
    if missing or extra:
        bad = (missing or extra)[0]
        raise CalibrationError(
            f"calibration keys must be the model's inputs {sorted(dims)}; "
            f"missing {missing}, not model inputs {extra}",
            input=bad,
        )
    checked = {name: _check_samples(name, arrays[name], dims[name]) for name in dims}
    counts = {name: len(a) for name, a in checked.items()}
    if len(set(counts.values())) > 1:
        first, *_ = counts
        odd = next(name for name, n in counts.items() if n != counts[first])
        raise CalibrationError(
            f"every calibration input must hold the same number of samples N; got {counts}",
            input=odd,
        )
    return checked


def fixed_input_shapes(
    model: onnx.ModelProto, calibration: dict[str, np.ndarray] | None
) -> dict[str, tuple[int, ...]]:
    """The static input shapes we compile for, per the calibration contract.

    A dynamic batch becomes 1, a static batch B stays B (samples are then taken B at a time), and any
    other dynamic dim takes its size from the calibration arrays.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for name, dims in input_dims(model).items():
        fixed = []
        for axis, dim in enumerate(dims):
            if dim is not None:
                fixed.append(dim)
            elif axis == 0:
                fixed.append(1)
            elif calibration is None:
                raise CalibrationError(
                    f"input '{name}' has a dynamic dimension {axis} ({_dim_label(model, name, axis)}); "
                    "calibration data is needed to fix it: pass a calibration .npz whose arrays have the "
                    "size to compile for",
                    input=name,
                )
            else:
                fixed.append(int(calibration[name].shape[axis]))
        shapes[name] = tuple(fixed)
    return shapes


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
            input_shapes=[f"{name}:{','.join(map(str, shape))}" for name, shape in shapes.items()],
        )
    except Exception as exc:
        warnings.warn(
            f"onnxslim could not simplify the model ({_reason(exc)}); falling back to onnx shape "
            "inference and constant folding",
            stacklevel=2,
        )
        try:
            slim = _fold_constants(onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True))
        except Exception as fold_exc:
            raise ModelImportError(
                f"the model could not be simplified for the fixed input shapes {shapes}: {_reason(fold_exc)}",
                reason=_reason(fold_exc),
            ) from fold_exc
    del slim.graph.input[:]
    slim.graph.input.extend(vi for vi in fixed.graph.input if vi.name in shapes)
    return slim


def import_relax(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> tvm.IRModule:
    """Convert the (simplified) model to Relax with the weights bound as constants.

    Ops TVM lacks are rewritten first (worker/converters), here because the recurrent ones unroll
    over sequence lengths that only the fixed, simplified shapes make static.
    """
    import tvm
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    model = converters.rewrite(model)
    known = _get_convert_map().keys() | _IMPORTER_BUILTIN_OPS
    unknown = sorted({node.op_type for node in _all_nodes(model.graph)} - known)
    if unknown:
        raise UnsupportedOpError(
            f"TVM's ONNX importer has no converter for {', '.join(unknown)}; replace "
            f"{'this op' if len(unknown) == 1 else 'these ops'} before exporting",
            op=unknown[0],
            ops=unknown,
        )
    try:
        return from_onnx(
            model, shape_dict={k: list(v) for k, v in shapes.items()}, keep_params_in_input=False
        )
    except tvm.error.OpNotImplemented as exc:
        raise UnsupportedOpError(f"TVM's ONNX importer: {_reason(exc)}", reason=_reason(exc)) from exc
    except Exception as exc:
        raise ModelImportError(
            f"TVM's ONNX importer failed on the simplified model: {_reason(exc)}", reason=_reason(exc)
        ) from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS] + " ..."


def _real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initialized = {t.name for t in model.graph.initializer}
    initialized |= {t.values.name for t in model.graph.sparse_initializer}
    return [vi for vi in model.graph.input if vi.name not in initialized]


def _dim_label(model: onnx.ModelProto, name: str, axis: int) -> str:
    vi = next(vi for vi in model.graph.input if vi.name == name)
    return repr(vi.type.tensor_type.shape.dim[axis].dim_param or "?")


def _all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _all_graphs(sub)


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for g in _all_graphs(graph):
        yield from g.node


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


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CalibrationError(
            f"calibration data must be an .npz archive (np.savez) of float arrays: {exc}"
        ) from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CalibrationError(
            "calibration data must be an .npz archive (np.savez) keyed by input name, not a single .npy array"
        )
    with loaded:
        return {name: _read_member(loaded, name) for name in loaded.files}


def _read_member(npz: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    try:
        return npz[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CalibrationError(
            f"calibration array '{name}' cannot be read without pickle ({exc}); store plain float arrays "
            "(np.savez of numeric arrays, not object arrays)",
            input=name,
        ) from exc


def _check_samples(name: str, array: np.ndarray, dims: Dims) -> np.ndarray:
    expected = "(" + ", ".join(["N"] + ["?" if d is None else str(d) for d in dims[1:]]) + ")"
    if not dims:
        raise CalibrationError(
            f"input '{name}' is a scalar; calibration samples need a batch axis, so it cannot be calibrated",
            input=name,
        )
    if array.dtype.kind != "f":
        raise CalibrationError(
            f"input '{name}' needs floating-point samples (float16/32/64), got {array.dtype}", input=name
        )
    got = str(tuple(array.shape))
    static_mismatch = any(d is not None and d != s for d, s in zip(dims[1:], array.shape[1:], strict=False))
    if array.ndim != len(dims) or static_mismatch:
        raise CalibrationError(f"input '{name}' expects {expected}, got {got}", input=name)
    batch = dims[0] or 1
    if array.shape[0] < 1 or array.shape[0] % batch:
        need = "at least one sample" if batch == 1 else f"a multiple of its static batch {batch} samples"
        raise CalibrationError(
            f"input '{name}' needs {need} along axis 0, got {array.shape[0]} (shape {got})", input=name
        )
    with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, reported just below
        samples = array.astype(np.float32)
    bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
    if bad:
        raise CalibrationError(
            f"input '{name}' has {bad} non-finite values (NaN/inf, or beyond float32 range); "
            "calibration samples must be finite",
            input=name,
        )
    return samples


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
