"""Partition: decide which ops run in integers, and why each other op stays float.

Compute ops (conv, dense, multiply, lookup tables) open quantized regions; follow ops (add, relu,
pooling, data movement) join a region only when an operand is already quantized, as Relay did.
The qconfig's skip_conv_layers / skip_dense_layer / exclude_ops / debug_enabled_ops keep ops float.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tvm import relax

from worker.errors import QConfigError
from worker.qconfig import QConfig
from worker.quantize.float_safety import layer_norms
from worker.quantize.graph import Graph, Node, const_value, dtypes_of, is_const, labels, tuple_fields
from worker.quantize.ops import rule_for
from worker.quantize.ops.base import skipped_layer


@dataclass
class Partition:
    quantized: set[Node] = field(default_factory=set)
    #: why each float op stayed float: "no rule", "excluded by qconfig", "skipped layer", ...
    reasons: dict[Node, str] = field(default_factory=dict)
    #: index of every conv / dense node among the layers of its kind (graph order, as
    #: skip_conv_layers counts)
    layer_index: dict[Node, int] = field(default_factory=dict)


def is_quantized(graph: Graph, partition: Partition, expr: relax.Expr) -> bool:
    """Whether the value of `expr` will be integer, looking through tuples and tuple items."""
    if isinstance(expr, relax.Tuple):
        return any(is_quantized(graph, partition, f) for f in expr.fields)
    node = graph.producer(expr)
    if node is None:
        return False
    if node.op is not None:
        return node in partition.quantized
    value = node.value
    if isinstance(value, relax.TupleGetItem):
        return is_quantized(graph, partition, value.tuple_value)
    if isinstance(value, relax.Tuple):
        return any(is_quantized(graph, partition, f) for f in value.fields)
    return is_quantized(graph, partition, value) if isinstance(value, relax.Var) else False


def _integer_tensor(graph: Graph, node: Node) -> str | None:
    """The first non-float tensor an op reads or writes. Integer tensors (token ids, byte values,
    lengths, sample rates, masks) are exact as they are: quantizing them would only break them."""
    exprs = [node.var]
    for arg in node.call.args:
        exprs.extend(tuple_fields(graph, arg) or [arg])
    return next((d for e in exprs for d in dtypes_of(e) if not d.startswith(("float", "bfloat"))), None)


def _excluded(op: str, qconfig: QConfig) -> bool:
    if op in qconfig.exclude_ops:
        return True
    return qconfig.debug_enabled_ops is not None and op not in qconfig.debug_enabled_ops


def named_layers(graph: Graph, names: list[str], field: str) -> set[Node]:
    """The nodes a qconfig names by report label ("nn.conv2d#3"); an unknown label is an error."""
    by_label = {label: graph.by_var[var] for var, label in labels(graph).items() if var in graph.by_var}
    unknown = [name for name in names if name not in by_label]
    if unknown:
        raise QConfigError(
            f"{field} names {unknown}, which this model does not have (labels as the report names them, "
            f"e.g. {sorted(by_label)[:3]})",
            field=field,
        )
    return {by_label[name] for name in names}


def partition(graph: Graph, qconfig: QConfig) -> Partition:
    result = Partition()
    layers: Counter[str] = Counter()
    norms = layer_norms(graph)
    skipped = named_layers(graph, qconfig.skip_layers, "skip_layers")
    for node in graph.nodes:
        if node.op is None:
            continue
        rule = rule_for(node.op)
        if rule is None:
            result.reasons[node] = norms.get(node, "no rule")
            continue
        layer = rule.layer(node)
        if layer is not None:
            result.layer_index[node] = layers[layer]
            layers[layer] += 1
        if _excluded(node.op, qconfig):
            result.reasons[node] = "excluded by qconfig"
        elif node in norms:
            result.reasons[node] = norms[node]
        elif (dtype := _integer_tensor(graph, node)) is not None:
            result.reasons[node] = f"integer tensors ({dtype}: exact already, never quantized)"
        elif rule.lut is not None and not qconfig.lut_activations:
            result.reasons[node] = "excluded by qconfig (lut_activations: false)"
        elif layer is not None and skipped_layer(layer, result.layer_index[node], qconfig):
            result.reasons[node] = "skipped layer"
        elif node in skipped:
            result.reasons[node] = "skipped layer (skip_layers)"
        elif (why := rule.accepts(node)) is not None:
            result.reasons[node] = f"unsupported: {why}"
        elif (why := rule.keep_float(graph, node)) is not None:
            result.reasons[node] = f"not int8-safe: {why}"
        elif rule.role == "compute" or any(is_quantized(graph, result, arg) for arg in node.call.args):
            result.quantized.add(node)
        else:
            result.reasons[node] = "float operands (follow op outside a quantized region)"
    return result


def apply_float_safety(graph: Graph, partition: Partition, thresholds: dict[relax.Expr, float]) -> None:
    """After calibration: keep float every quantized op whose rule finds, from the calibrated ranges,
    that it would lose its precision in integers (the reason names why). Its consumers keep their
    quantization: every operand of a quantized op has a calibrated threshold."""

    def range_of(expr: relax.Expr) -> float:
        return float(np.max(np.abs(const_value(expr)))) if is_const(expr) else float(thresholds[expr])

    for node in graph.nodes:
        rule = rule_for(node.op) if node in partition.quantized else None
        if rule is not None and rule.float_safety is not None:
            why = rule.float_safety(node, range_of)
            if why is not None:
                partition.quantized.discard(node)
                partition.reasons[node] = why
