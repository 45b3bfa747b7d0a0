"""Decomposed layer norms the integer layer norm computes become one `nn.layer_norm` call.

Exporters before ONNX's LayerNormalization (opset < 17, tf2onnx, paddle2onnx) write a layer norm as
its statistics: m = mean(x), d = x − m, var = mean(d²) (or E[x²] − m²), d / sqrt(var + eps) or
d · 1/sqrt(var + eps). As float ops those statistics cannot be quantized (float_safety keeps the
chain float: the subtraction of nearly equal numbers loses its int8 levels); the integer layer norm
instead computes N·Σq² − (Σq)² exactly in int64. So one decision is made here, before the
partition: a chain the integer layer norm fits (`layer_norm_misfit`) is folded into `nn.layer_norm`
(γ = 1, β = 0: the affine after it stays a multiply and an add of its own) and its rule realizes it;
any other normalisation is left as it is, and float_safety keeps it float with its reason.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R

from worker.quantize.graph import (
    Graph,
    Node,
    build_graph,
    const_value,
    is_const,
    replace_calls,
    shape_of,
    users_of,
)
from worker.quantize.ops.normalization import layer_norm_misfit


class _Match:
    """The nodes of one candidate chain, collected while matching."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes: list[Node] = []

    def node(self, expr: relax.Expr, *ops: str) -> Node | None:
        node = self.graph.producer(expr)
        if node is None or node.op not in ops:
            return None
        self.nodes.append(node)
        return node

    def mean(self, expr: relax.Expr) -> tuple[relax.Expr, tuple[int, ...]] | None:
        """(input, normalised axes) of a keepdims mean over explicit axes."""
        node = self.node(expr, "mean")
        if node is None or not bool(node.call.attrs.keepdims) or node.call.attrs.axis is None:
            return None
        ndim = len(shape_of(node.var))
        return node.call.args[0], tuple(sorted(int(a) % ndim for a in node.call.attrs.axis))

    def square_of(self, expr: relax.Expr) -> relax.Expr | None:
        """t when `expr` is t · t or t²."""
        node = self.node(expr, "multiply", "power")
        if node is None:
            return None
        a, b = node.call.args[:2]
        if node.op == "multiply":
            return a if a.same_as(b) else None
        return a if is_const(b) and float(const_value(b)) == 2.0 else None

    def variance(
        self, expr: relax.Expr, x: relax.Expr, m: relax.Expr, d: relax.Expr, axes: tuple[int, ...]
    ) -> bool:
        """mean(d²) over `axes`, or mean(x²) − m² (m being x's mean)."""
        difference = self.node(expr, "subtract")
        if difference is not None:
            mean_sq, sq_mean = difference.call.args[:2]
            outer = self.mean(mean_sq)
            return (
                outer is not None
                and outer[1] == axes
                and _same(self.square_of(outer[0]), x)
                and _same(self.square_of(sq_mean), m)
            )
        inner = self.mean(expr)
        return inner is not None and inner[1] == axes and _same(self.square_of(inner[0]), d)

    def plus_eps(self, expr: relax.Expr) -> tuple[relax.Expr, float]:
        """(var, eps) of var + eps (a scalar constant), else (expr, 0)."""
        add = self.graph.producer(expr)
        if add is not None and add.op == "add":
            a, b = add.call.args[:2]
            var, eps = (a, b) if is_const(b) else (b, a)
            if is_const(eps) and const_value(eps).size == 1:
                self.nodes.append(add)
                return var, float(const_value(eps))
        return expr, 0.0

    def root(self, expr: relax.Expr) -> tuple[relax.Expr, float] | None:
        """(var, eps) of sqrt(var + eps)."""
        node = self.node(expr, "sqrt")
        return None if node is None else self.plus_eps(node.call.args[0])

    def reciprocal_root(self, expr: relax.Expr) -> tuple[relax.Expr, float] | None:
        """(var, eps) of rsqrt(var + eps) or 1 / sqrt(var + eps)."""
        node = self.node(expr, "rsqrt", "divide")
        if node is None:
            return None
        if node.op == "rsqrt":
            return self.plus_eps(node.call.args[0])
        one, denominator = node.call.args[:2]
        if not is_const(one) or const_value(one).size != 1 or float(const_value(one)) != 1.0:
            return None
        return self.root(denominator)


def _same(a: relax.Expr | None, b: relax.Expr) -> bool:
    return a is not None and a.same_as(b)


def _layer_norm(graph: Graph, node: Node) -> tuple[relax.Call, list[Node]] | None:
    """The nn.layer_norm a normalising divide / multiply computes, and the chain's nodes."""
    if node.op not in ("divide", "multiply"):
        return None
    a, b = node.call.args[:2]
    for d, stat in ((a, b), (b, a)) if node.op == "multiply" else ((a, b),):
        match = _Match(graph)
        centring = match.node(d, "subtract")
        if centring is None:
            continue
        x, m = centring.call.args[:2]
        mean = match.mean(m)
        if mean is None or not mean[0].same_as(x):
            continue
        axes = mean[1]
        rooted = match.root(stat) if node.op == "divide" else match.reciprocal_root(stat)
        if rooted is None or not match.variance(rooted[0], x, m, d, axes):
            continue
        shape = shape_of(x)
        if layer_norm_misfit(shape, list(axes)) is not None:
            return None
        dtype = str(x.ty.dtype)
        normalised = [shape[i] for i in axes]
        call = R.nn.layer_norm(
            x,
            relax.const(np.ones(normalised, dtype)),
            relax.const(np.zeros(normalised, dtype)),
            axes=list(axes),
            epsilon=rooted[1],
            center=False,
            scale=False,
        )
        return call, [*match.nodes, node]
    return None


def fold_layer_norms(mod: tvm.IRModule) -> tvm.IRModule:
    """Every decomposed layer norm the integer layer norm fits, as one nn.layer_norm call; chains
    whose statistics are read elsewhere as well are left alone."""
    graph = build_graph(mod)
    users = users_of(graph)
    replacements: dict[relax.Call, relax.Expr] = {}
    for node in graph.nodes:
        found = _layer_norm(graph, node)
        if found is None:
            continue
        call, chain = found
        members = {n.var for n in chain}
        if all(users[n.var] <= members for n in chain if n is not node):
            replacements[node.call] = call
    return replace_calls(mod, replacements)
