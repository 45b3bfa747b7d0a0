"""Annotate: which float tensors get quantized, and so which need a calibrated threshold.

Relay marked edges with simulated_quantize kinds (QInput for operands of quantized ops, QWeight for
constants, QActivation for outputs). Here the kinds follow from the op rules: every non-constant
tensor operand of a quantized op is a QInput edge, constants named by the rule are QWeights, and
outputs that must be requantized (nbit_activation < 32, lookup tables without a fixed range) are
QActivation edges. The calibration points are the float tensors behind those edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm import relax

from worker.qconfig import QConfig
from worker.quantize.graph import Graph, Node, is_const, is_tensor, tuple_fields
from worker.quantize.ops import rule_for
from worker.quantize.partition import Partition


@dataclass
class Annotation:
    partition: Partition
    #: float tensors whose |x| threshold calibration must find, in graph order, unique
    points: list[relax.Expr] = field(default_factory=list)
    #: the kind of each point: "input" (QInput) or "activation" (QActivation)
    kinds: dict[relax.Expr, str] = field(default_factory=dict)


def operands(graph: Graph, node: Node) -> list[relax.Expr]:
    """Non-constant tensor operands, with tuple operands (concat) flattened. A tuple of integers
    (strided_slice's axes, begins and ends) holds no tensor."""
    out: list[relax.Expr] = []
    for arg in node.call.args:
        if (fields := tuple_fields(graph, arg)) is not None:
            out.extend(f for f in fields if is_tensor(f) and not is_const(f))
        elif is_tensor(arg) and not is_const(arg):
            out.append(arg)
    return out


def annotate(graph: Graph, partition: Partition, qconfig: QConfig) -> Annotation:
    result = Annotation(partition)

    def add(expr: relax.Expr, kind: str) -> None:
        if expr not in result.kinds:
            result.kinds[expr] = kind
            result.points.append(expr)

    for node in graph.nodes:
        if node not in partition.quantized:
            continue
        for arg in operands(graph, node):
            add(arg, "input")
        if rule_for(node.op).output_threshold(qconfig):
            add(node.var, "activation")
    return result
