"""A read-only view of a Relax `main` as a list of nodes in graph order.

The passes reason about one dataflow block of single-op bindings (what `from_onnx` + the
prerequisite passes produce). This view gives them op names, constant operands and producers
without each pass re-walking Relax's object model.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from worker.errors import InternalError


@dataclass(eq=False)
class Node:
    """One binding `var = value` of the dataflow block."""

    index: int
    var: relax.Var
    value: relax.Expr
    op: str | None  # "nn.conv2d", ... ; None for tuples, tuple-get-item, aliases

    @property
    def name(self) -> str:
        return self.var.name

    @property
    def call(self) -> relax.Call:
        return self.value


@dataclass
class Graph:
    module: tvm.IRModule
    func: relax.Function
    params: list[relax.Var]
    nodes: list[Node]
    output: relax.Expr
    by_var: dict[relax.Var, Node] = field(default_factory=dict)

    def producer(self, expr: relax.Expr) -> Node | None:
        return self.by_var.get(expr) if isinstance(expr, relax.Var) else None


def op_name(value: relax.Expr) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name.removeprefix("relax.")
    return None


def is_const(expr: relax.Expr) -> bool:
    return isinstance(expr, relax.expr_functor.GenericConst)


def const_value(expr: relax.Expr) -> np.ndarray:
    return expr.value.numpy()


def is_tensor(expr: relax.Expr) -> bool:
    return isinstance(getattr(expr, "ty", None), relax.TensorType)


def dtypes_of(expr: relax.Expr) -> list[str]:
    """The dtype of a tensor, or of each tensor field of a tuple; [] for anything else."""
    ty = expr.ty
    if isinstance(ty, relax.TupleType):
        return [str(f.dtype) for f in ty.fields if isinstance(f, relax.TensorType)]
    return [str(ty.dtype)] if isinstance(ty, relax.TensorType) else []


def shape_of(expr: relax.Expr) -> tuple[int, ...]:
    shape = expr.ty.shape
    if shape is None:
        raise InternalError(f"tensor {expr} has no static shape after shape fixing")
    return tuple(int(d) for d in shape)


def build_graph(mod: tvm.IRModule) -> Graph:
    """The nodes of `mod["main"]`, which must be one dataflow block (prerequisite guarantees it)."""
    func = mod["main"]
    body = func.body
    bindings = [b for block in body.blocks for b in block.bindings]
    graph = Graph(module=mod, func=func, params=list(func.params), nodes=[], output=body.body)
    for index, binding in enumerate(bindings):
        if not isinstance(binding, relax.VarBinding):
            raise InternalError(f"unexpected binding kind {type(binding).__name__} in main")
        node = Node(index=index, var=binding.var, value=binding.value, op=op_name(binding.value))
        graph.nodes.append(node)
        graph.by_var[binding.var] = node
    return graph


def with_functions_of(mod: tvm.IRModule, source: tvm.IRModule) -> tvm.IRModule:
    """`mod` plus every function of `source` it lacks, under the same GlobalVar.

    The ONNX importer adds TIR PrimFuncs of its own (`pad` for an even SAME_UPPER conv,
    `mirror_pad` for a reflect Pad) that main calls; a pass that rebuilds main in a fresh
    BlockBuilder must carry them over, or the build fails with "no definition of I.GlobalVar".
    """
    present = {gv.name_hint for gv in mod.get_global_vars()}
    for gv, func in source.functions.items():
        if gv.name_hint not in present:
            mod[gv] = func
    return mod


def tuple_fields(graph: Graph, expr: relax.Expr) -> list[relax.Expr] | None:
    """The fields of a tuple operand, inline (`concat((a, b))`) or bound to a var; None otherwise."""
    if isinstance(expr, relax.Tuple):
        return list(expr.fields)
    node = graph.producer(expr)
    if node is not None and isinstance(node.value, relax.Tuple):
        return list(node.value.fields)
    return None


def labels(graph: Graph) -> dict[relax.Expr, str]:
    """Readable names for reports: "nn.conv2d#2" = the third conv2d in graph order; model inputs
    keep their ONNX names. Relax's own var names (lv17) mean nothing to a user."""
    out: dict[relax.Expr, str] = {p: p.name for p in graph.params}
    counts: dict[str, int] = defaultdict(int)
    for node in graph.nodes:
        if node.op is not None:
            out[node.var] = f"{node.op}#{counts[node.op]}"
            counts[node.op] += 1
        else:
            out[node.var] = node.name
    return out


def substitute(expr: relax.Expr, mapping: dict[relax.Var, relax.Expr]) -> relax.Expr:
    """`expr` with the vars of `mapping` replaced (calls, tuples and tuple items are rebuilt)."""
    if isinstance(expr, relax.Var):
        return mapping.get(expr, expr)
    if isinstance(expr, relax.Call):
        return relax.Call(expr.op, [substitute(a, mapping) for a in expr.args], expr.attrs, expr.ty_args)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([substitute(f, mapping) for f in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(substitute(expr.tuple_value, mapping), expr.index)
    return expr


@relax.expr_functor.mutator
class _Replace(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, replacements: dict[relax.Call, relax.Expr]) -> None:
        super().__init__(mod)
        self.replacements = replacements

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if call in self.replacements:
            return super().visit_call_(self.replacements[call])
        return super().visit_call_(call)


def replace_calls(mod: tvm.IRModule, replacements: dict[relax.Call, relax.Expr]) -> tvm.IRModule:
    """`mod` with calls of main replaced (a rewrite that found a pattern ending in each of them);
    the bindings only the replaced calls used are dropped."""
    if not replacements:
        return mod
    main = _Replace(mod, replacements).visit_expr(mod["main"])
    out = tvm.IRModule({gv: mod[gv] for gv in mod.get_global_vars() if gv.name_hint != "main"})
    out["main"] = main
    return relax.transform.DeadCodeElimination(["main"])(out)


def users_of(graph: Graph) -> dict[relax.Var, set[relax.Var | None]]:
    """Who reads each var: the binding's var, or None for the function's output."""
    users: dict[relax.Var, set[relax.Var | None]] = defaultdict(set)
    for node in graph.nodes:
        for v in relax.analysis.free_vars(node.value):
            users[v].add(node.var)
    for v in relax.analysis.free_vars(graph.output):
        users[v].add(None)
    return users
