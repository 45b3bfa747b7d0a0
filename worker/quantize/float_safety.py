"""Patterns that do not survive int8: found here, kept float by the partition with a named reason.

A decomposed layer norm normalises a tensor by statistics computed from that same tensor (mean,
E[x²], variance, 1/sqrt). Quantizing the statistics is what breaks it: E[x²] − E[x]² and x − mean
subtract nearly equal numbers, so an int8 grid sized for the operands leaves a handful of levels for
the result (magika's model loses 9 dB at the normalising multiply, even simulated). The whole chain
from the tensor to its normalised value stays float; the affine after it (× gamma + beta) and
everything else quantizes as usual.

Recognised: a reduction (sum, mean, variance, std) of x, of x², or of (x − stat); statistics
derived from those alone (scaling, broadcasting, eps, max(0, ·), sqrt, 1/·); and a multiply or
divide of x (or x − stat) by a statistic that went through a square root. That covers
E[x²] − E[x]² and mean((x − mean)²) layer norms, RMS norm and L2 normalisation; softmax (no square
root) is not matched. Layer norms the integer layer norm fits never reach this check: they were
folded into one nn.layer_norm before the partition (layer_norm_fold.py), whose rule decides them.
"""

from __future__ import annotations

from tvm import relax

from worker.quantize.graph import Graph, Node, const_value, is_const, labels, tuple_fields

_REDUCTIONS = {"sum", "mean", "variance", "std"}
_LAYOUT = {"reshape", "expand_dims", "squeeze", "permute_dims", "broadcast_to", "flatten"}
_ROOTS = {"sqrt", "rsqrt"}


def _tensor_operands(graph: Graph, node: Node) -> list[relax.Expr]:
    out: list[relax.Expr] = []
    for arg in node.call.args:
        for expr in tuple_fields(graph, arg) or [arg]:
            if isinstance(getattr(expr, "ty", None), relax.TensorType) and not is_const(expr):
                out.append(expr)
    return out


class _Statistics:
    """Which tensors are statistics of which tensor, found in one walk in graph order."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        #: statistic var -> the tensor it summarises
        self.of: dict[relax.Expr, relax.Expr] = {}
        #: statistics that went through a square root (a standard deviation, a norm)
        self.rooted: set[relax.Expr] = set()
        for node in graph.nodes:
            if node.op is not None:
                self._visit(node)

    def base(self, expr: relax.Expr) -> relax.Expr:
        """The tensor `expr` is a relayout, a square or a centring (x − stat) of."""
        node = self.graph.producer(expr)
        if node is None or node.op is None:
            return expr
        args = node.call.args
        if node.op in _LAYOUT:
            return self.base(args[0])
        if node.op == "multiply" and self.base(args[0]) == self.base(args[1]):
            return self.base(args[0])
        if node.op == "power" and is_const(args[1]) and float(const_value(args[1])) == 2.0:
            return self.base(args[0])
        if node.op == "subtract" and args[1] in self.of and self.of[args[1]] == self.base(args[0]):
            return self.base(args[0])
        return expr

    def _visit(self, node: Node) -> None:
        operands = _tensor_operands(self.graph, node)
        if not operands:
            return
        if node.op in _REDUCTIONS:
            self.of[node.var] = self.base(operands[0])
        elif all(op in self.of for op in operands) and all(
            self.of[op] == self.of[operands[0]] for op in operands
        ):
            self.of[node.var] = self.of[operands[0]]  # computed from statistics of one tensor only
        else:
            return
        if node.op in _ROOTS or any(op in self.rooted for op in operands):
            self.rooted.add(node.var)

    def normalised(self, node: Node) -> relax.Expr | None:
        """x when `node` divides or multiplies x (or x − mean) by a rooted statistic of x."""
        if node.op not in ("multiply", "divide") or len(node.call.args) != 2:
            return None
        a, b = node.call.args
        for value, stat in ((a, b), (b, a)):
            if stat in self.rooted and value not in self.of and self.base(value) == self.of[stat]:
                return self.of[stat]
        return None


def _descendants(graph: Graph, root: relax.Expr) -> set[relax.Expr]:
    reached = {root}
    for node in graph.nodes:
        if any(v in reached for v in relax.analysis.free_vars(node.value)):
            reached.add(node.var)
    return reached


def _ancestors(graph: Graph, node: Node) -> set[Node]:
    found: set[Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current in found:
            continue
        found.add(current)
        for var in relax.analysis.free_vars(current.value):
            producer = graph.producer(var)
            if producer is not None:
                stack.append(producer)
    return found


def layer_norms(graph: Graph) -> dict[Node, str]:
    """Every node of every decomposed normalisation (from its input up to the normalised value),
    with the reason the partition gives for keeping it float."""
    stats = _Statistics(graph)
    names = labels(graph)
    reasons: dict[Node, str] = {}
    for node in graph.nodes:
        x = stats.normalised(node)
        if x is None:
            continue
        below = _descendants(graph, x)
        chain = [n for n in _ancestors(graph, node) if n.var in below and n.var != x]
        subtracts_stats = any(
            n.op == "subtract" and all(a in stats.of for a in n.call.args[:2]) for n in chain
        )
        form = "E[x²] − E[x]²" if subtracts_stats else "x − mean, variance"
        reason = (
            f"layer norm: {names.get(x, 'x')} normalised by its own statistics ({form}) loses its "
            "precision in int8; kept float"
        )
        for n in chain:
            reasons.setdefault(n, reason)
    return reasons
