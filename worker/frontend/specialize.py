"""Specialise an `If` on an integer scalar input to the branch the calibration data takes.

Why: TVM's importer converts both branches of every `If` for the fixed input shapes, and the
quantizer reasons about one dataflow block. A branch written for other input shapes (silero-vad's
8 kHz branch, once `input` is pinned to a 16 kHz chunk) fails to type-check there (a MatMul whose
reduction dims disagree) although the model never runs it for those shapes: ONNX Runtime fails
the same way on a 16 kHz chunk with `sr=8000`. When every calibration sample gives such an input
(a sample rate, a mode flag) one value, the `If`s whose condition it alone decides are replaced by
the branch that value takes.

That is a promise about the artifact's inputs, so it is never silent: `Pin` records each one, the
report's provenance lists them, and `guard.guard_pins` makes the compiled `main` refuse any other
value at run time instead of computing the wrong branch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from worker.converters.scope import all_graphs, subgraphs
from worker.frontend.calibration import CalibrationSet
from worker.frontend.model import model_inputs


@dataclass(frozen=True)
class Pin:
    """An integer input the artifact was specialised for: `value` is the only one it accepts."""

    input: str
    value: int
    dtype: str
    shape: tuple[int, ...]
    #: the If nodes resolved by it (node name, else "If#<index>"), with the branch kept
    branches: tuple[str, ...]


def specialize(
    model: onnx.ModelProto, calibration: CalibrationSet | None
) -> tuple[onnx.ModelProto, list[Pin]]:
    """The model with every If that constant integer inputs decide replaced by its taken branch.

    Candidates are the single-element integer inputs whose calibration samples all hold one value;
    only those some If condition actually reads become pins. Without calibration data nothing is
    specialised (no value is known to be the user's).
    """
    if not any(node.op_type == "If" for node in model.graph.node):
        return model, []
    values = _constant_inputs(model, calibration)
    if not values:
        return model, []
    model = copy.deepcopy(model)
    resolved: dict[str, list[str]] = {}
    while _resolve_one(model, values, resolved):
        pass
    if not resolved:
        return model, []
    specs = {spec.name: spec for spec in model_inputs(model)}
    pins = [
        Pin(name, int(values[name].reshape(-1)[0]), str(specs[name].dtype), values[name].shape, tuple(found))
        for name, found in resolved.items()
    ]
    return model, pins


def undecided_inputs(model: onnx.ModelProto) -> list[str]:
    """The integer inputs that alone decide a top-level If still in the model: what calibration
    data with one value each would have specialised (named when the import then fails)."""
    integer = {spec.name for spec in model_inputs(model) if spec.kind == "int"}
    found: list[str] = []
    for _, _, _, leaves in _input_conditions(model.graph):
        if leaves <= integer:
            found += sorted(leaves - set(found))
    return found


def _constant_inputs(model: onnx.ModelProto, calibration: CalibrationSet | None) -> dict[str, np.ndarray]:
    """Single-element integer inputs whose every calibration sample is one and the same array."""
    if calibration is None:
        return {}
    found = {}
    for spec in model_inputs(model):
        shape = calibration.shapes[spec.name]
        if spec.kind != "int" or int(np.prod(shape)) != 1:
            continue
        seen = np.unique(calibration.values(spec.name))
        if seen.size == 1:
            found[spec.name] = np.full(shape, seen[0], spec.dtype)
    return found


def _resolve_one(
    model: onnx.ModelProto, values: dict[str, np.ndarray], resolved: dict[str, list[str]]
) -> bool:
    """Inline the first top-level If whose condition `values` decide; False when there is none.
    A branch brought up may hold further such Ifs: the caller repeats until none is left."""
    graph = model.graph
    for index, node, chain, leaves in _input_conditions(graph):
        if not leaves <= values.keys():
            continue
        taken = _evaluate(model, chain, node.input[0], {name: values[name] for name in leaves})
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if taken else "else_branch"))
        if not _inlinable(graph, index, branch):
            continue
        label = f"{node.name or f'If#{index}'} ({'then' if taken else 'else'} branch kept)"
        for name in leaves:
            resolved.setdefault(name, []).append(label)
        _inline(graph, index, node, branch)
        return True
    return False


def _input_conditions(
    graph: onnx.GraphProto,
) -> Iterator[tuple[int, onnx.NodeProto, list[onnx.NodeProto], set[str]]]:
    """(index, If node, the nodes computing its condition, the graph inputs they read) for each
    top-level If whose condition only constants and graph inputs feed."""
    producers = {out: node for node in graph.node for out in node.output}
    constants = {t.name for t in graph.initializer}
    for index, node in enumerate(graph.node):
        if node.op_type == "If" and node.domain in ("", "ai.onnx"):
            chain, leaves = _condition_slice(graph, node.input[0], producers, constants)
            if chain is not None and leaves:
                yield index, node, chain, leaves


def _condition_slice(
    graph: onnx.GraphProto, cond: str, producers: dict[str, onnx.NodeProto], constants: set[str]
) -> tuple[list[onnx.NodeProto] | None, set[str]]:
    """(the nodes computing `cond` in graph order, the graph inputs they read), or (None, ...) when
    something other than constants and inputs feeds it (a subgraph, another domain, randomness)."""
    chain: dict[int, onnx.NodeProto] = {}
    leaves: set[str] = set()
    stack = [cond]
    while stack:
        name = stack.pop()
        if not name or name in constants:
            continue
        node = producers.get(name)
        if node is None:
            leaves.add(name)  # a graph input (or an outer name, which never matches a value)
            continue
        if id(node) in chain:
            continue
        if node.domain not in ("", "ai.onnx") or any(subgraphs(node)) or node.op_type.startswith("Random"):
            return None, leaves
        chain[id(node)] = node
        stack.extend(node.input)
    order = {id(n): i for i, n in enumerate(graph.node)}
    return sorted(chain.values(), key=lambda n: order[id(n)]), leaves


def _evaluate(
    model: onnx.ModelProto, chain: list[onnx.NodeProto], cond: str, feeds: dict[str, np.ndarray]
) -> bool:
    """The condition's value for the pinned inputs, with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    read = {i for node in chain for i in node.input}
    graph = helper.make_graph(
        chain,
        "condition",
        [vi for vi in model.graph.input if vi.name in feeds],
        [helper.make_empty_tensor_value_info(cond)],
        [t for t in model.graph.initializer if t.name in read],
    )
    evaluator = ReferenceEvaluator(helper.make_model(graph, opset_imports=model.opset_import))
    (value,) = evaluator.run(None, feeds)
    return bool(np.asarray(value).reshape(-1)[0])


def _inlinable(graph: onnx.GraphProto, index: int, branch: onnx.GraphProto) -> bool:
    """The branch's own names must not clash with any name outside the If once they share a scope."""
    outside = {vi.name for vi in [*graph.input, *graph.output]} | {t.name for t in graph.initializer}
    for i, node in enumerate(graph.node):
        if i != index:
            outside.update(node.output)
            for sub in subgraphs(node):
                outside.update(_defined(sub))
    return not _defined(branch, nested=False) & outside


def _defined(graph: onnx.GraphProto, nested: bool = True) -> set[str]:
    """The names a graph defines (initializers, node outputs), with its subgraphs' when `nested`."""
    names: set[str] = set()
    for g in all_graphs(graph) if nested else [graph]:
        names.update(t.name for t in g.initializer)
        names.update(o for node in g.node for o in node.output if o)
    return names


def _inline(graph: onnx.GraphProto, index: int, node: onnx.NodeProto, branch: onnx.GraphProto) -> None:
    """Replace graph.node[index] (the If) by the branch's nodes and initializers; an Identity gives
    each branch output the If's output name (a branch may return an outer value as it is)."""
    renames = [
        helper.make_node("Identity", [inner.name], [outer], name=f"{node.name or 'If'}/{outer}")
        for inner, outer in zip(branch.output, node.output, strict=True)
        if outer
    ]
    body = [*branch.node, *renames]
    nodes = [*graph.node[:index], *body, *graph.node[index + 1 :]]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(branch.initializer)
