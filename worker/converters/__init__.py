"""ONNX→ONNX rewrites of the ops TVM's ONNX importer lacks (or imports as an opaque TIR function),
into ops it imports and we quantize.

The frontend calls `rewrite` on the shape-fixed, simplified model just before TVM's import: the
recurrent converters unroll over the sequence length, which is static only once the input shapes
are fixed and shape subgraphs are folded. `CONVERTED_OPS` is what the early unsupported-op check
counts as supported. Nothing here imports TVM.
"""

from __future__ import annotations

import copy

import onnx

from worker.converters import auto_pad
from worker.converters.cells import CELLS
from worker.converters.recurrent import expand
from worker.converters.scope import (
    Scope,
    Writer,
    all_graphs,
    default_opset,
    graph_shapes,
    model_names,
    read_names,
    subgraphs,
)

#: ONNX op types (default domain) that `rewrite` replaces.
CONVERTED_OPS: frozenset[str] = frozenset(CELLS)

__all__ = ["CONVERTED_OPS", "rewrite"]


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every CONVERTED_OPS node, in any graph, replaced by standard ops, and
    SAME convs with explicit pads (worker/converters/auto_pad.py).

    Raises UnsupportedOpError naming the node when one cannot be rewritten (a dynamic sequence
    length, weights that are not constants, an activation we have no op for, ...). A model without
    such nodes is returned as it is.
    """
    nodes = [node for graph in all_graphs(model.graph) for node in graph.node]
    converted = any(_converted(node) for node in nodes)
    if not converted and not any(auto_pad.is_same_conv(node) for node in nodes):
        return model  # shape inference costs seconds on a large model: only when something needs it
    model = copy.deepcopy(model)
    inferred = _inferred(model)
    auto_pad.make_pads_explicit(model, inferred)
    if not converted:
        return model
    opset = default_opset(model)
    taken, read = model_names(model), read_names(model)
    root = Scope(model.graph, graph_shapes(inferred.graph), opset)
    orphans: set[str] = set()
    _rewrite_graph(root, inferred.graph, opset, taken, read, orphans)
    _prune(model, orphans)
    return model


def _converted(node: onnx.NodeProto) -> bool:
    return node.op_type in CONVERTED_OPS and node.domain in ("", "ai.onnx")


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with inferred shapes, read for static dims only (inference may be partial)."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        return model


def _rewrite_graph(
    scope: Scope,
    inferred: onnx.GraphProto,
    opset: int,
    taken: set[str],
    read: set[str],
    orphans: set[str],
) -> None:
    """Rewrite one graph and the graphs inside it; `orphans` collects the names that may be left
    unread: the replaced nodes' inputs and the constants written."""
    graph = scope.graph
    writer = Writer(graph, opset, taken)
    nodes: list[onnx.NodeProto] = []
    for node, seen in zip(graph.node, inferred.node, strict=True):
        for sub, sub_seen in zip(subgraphs(node), subgraphs(seen), strict=True):
            _rewrite_graph(scope.child(sub, graph_shapes(sub_seen)), sub_seen, opset, taken, read, orphans)
        if _converted(node):
            nodes.extend(expand(node, scope, writer, read))
            orphans.update(i for i in node.input if i)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    orphans.update(writer.constants)  # those the dropped parts of steps alone read


def _prune(model: onnx.ModelProto, orphans: set[str]) -> None:
    """Drop the initializers and constant chains that nothing reads any more (the replaced nodes'
    weights, constants of dropped step results)."""
    while orphans:
        read = read_names(model)
        dead = orphans - read
        found: set[str] = set()
        for graph in all_graphs(model.graph):
            kept = []
            for node in graph.node:
                if dead.intersection(node.output) and not read.intersection(node.output):
                    found.update(i for i in node.input if i)
                else:
                    kept.append(node)
            if len(kept) < len(graph.node):
                del graph.node[:]
                graph.node.extend(kept)
            unread = [t for t in graph.initializer if t.name in dead]
            for tensor in unread:
                graph.initializer.remove(tensor)
        orphans = found
