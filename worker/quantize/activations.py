"""Activation patterns: a chain of element-wise ops on one tensor becomes one `tvmq.elementwise` call.

Exporters write activations as small graphs: hard-swish as `x * clip(x + 3, 0, 6) / 6` (PyTorch,
Paddle, tf2onnx each a little differently), GELU as `x * (erf(x / √2) + 1) * 0.5`, SiLU as
`x * sigmoid(x)`, mish as `x * tanh(softplus(x))`. Whatever the spelling, such a chain is a function
of one tensor, so on an int8 input it has 256 possible inputs and one lookup table computes it. The
chains are found structurally (every op element-wise, every other operand a scalar constant, one
value leaving the chain) and named by what they compute, compared numerically with known functions.

Left alone: single ops (they have rules of their own), chains that integer arithmetic computes
exactly (adds, multiplies, divides and clamps by constants: `relu(x + b)`, `clip(x / 6 + 0.5, 0, 1)`),
and chains with per-channel constants other than PReLU's slope (one table per channel each).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import tvm
from tvm import relax

from worker.quantize.graph import (
    Graph,
    Node,
    build_graph,
    const_value,
    is_const,
    replace_calls,
    shape_of,
    substitute,
    users_of,
)
from worker.quantize.ops.elementwise import NUMPY, SQRT_2_OVER_PI, Chain, elementwise, erf, sigmoid

#: ops integer arithmetic computes exactly when their other operand is a constant
_EXACT = {
    "add",
    "subtract",
    "multiply",
    "divide",
    "negative",
    "nn.relu",
    "nn.relu6",
    "maximum",
    "minimum",
    "clip",
}
#: PReLU's slope: a per-channel table, at most this many channels
MAX_TABLE_CHANNELS = 1024

#: what a chain is called in reports when it computes one of these (checked on [-8, 8])
KNOWN_FUNCTIONS = {
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_sigmoid(slope=0.2)": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
    "hard_swish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "silu": lambda x: x * sigmoid(x),
    "quick_gelu": lambda x: x * sigmoid(1.702 * x),
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x**3))),
    "mish": lambda x: x * np.tanh(np.logaddexp(0.0, x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
}


def _tensor_args(call: relax.Call) -> list[relax.Var]:
    return [a for a in call.args if isinstance(a, relax.Var)]


def _constants_fit(node: Node) -> bool:
    """Scalar constants only, but for PReLU's slope (one table per channel)."""
    for i, arg in enumerate(node.call.args):
        if not is_const(arg):
            continue
        size = const_value(arg).size
        if size != 1 and not (node.op == "nn.prelu" and i == 1 and size <= MAX_TABLE_CHANNELS):
            return False
    return True


def _is_float_tensor(expr: relax.Expr) -> bool:
    ty = getattr(expr, "ty", None)
    return isinstance(ty, relax.TensorType) and str(ty.dtype).startswith("float") and ty.shape is not None


def _chains(graph: Graph) -> list[list[Node]]:
    """Components of element-wise nodes that compute a function of one tensor (graph order)."""
    root_of: dict[relax.Var, relax.Var] = {}
    parent: dict[relax.Var, relax.Var] = {}  # union-find over chain members

    def find(v: relax.Var) -> relax.Var:
        while parent[v] is not v:
            v = parent[v]
        return v

    for node in graph.nodes:
        if node.op not in NUMPY or not _is_float_tensor(node.var) or not _constants_fit(node):
            continue
        tensors = _tensor_args(node.call)
        roots = {root_of.get(a, a) for a in tensors}
        if len(roots) != 1:
            continue
        root = roots.pop()
        if not _is_float_tensor(root) or shape_of(root) != shape_of(node.var):
            continue
        root_of[node.var] = root
        parent[node.var] = node.var
        for a in tensors:
            if a in root_of:
                parent[find(a)] = node.var
    groups: dict[relax.Var, list[Node]] = defaultdict(list)
    for node in graph.nodes:
        if node.var in root_of:
            groups[find(node.var)].append(node)
    return list(groups.values())


def _worth_a_table(chain: list[Node]) -> bool:
    """More than one op, and not what integer rules compute exactly."""
    if len(chain) < 2:
        return False
    return any(n.op not in _EXACT or len(_tensor_args(n.call)) > 1 for n in chain)


def _chain(root: relax.Var, nodes: list[Node]) -> Chain:
    variables = [relax.Var("x", root.ty)]
    mapping: dict[relax.Var, relax.Expr] = {root: variables[0]}
    calls = []
    for node in nodes:
        calls.append(substitute(node.call, mapping))
        variables.append(relax.Var(node.var.name, node.var.ty))
        mapping[node.var] = variables[-1]
    unnamed = Chain(variables, calls, "+".join(n.op for n in nodes))
    return Chain(variables, calls, _known_name(unnamed) or unnamed.function)


def _known_name(chain: Chain) -> str | None:
    """The known function a chain computes (compared on [-8, 8]), if any."""
    x = np.linspace(-8.0, 8.0, 1601)
    ndim = len(shape_of(chain.variables[0]))
    got = chain.evaluate(x.reshape((-1,) + (1,) * (ndim - 1)))
    if got.size != x.size:  # per-channel constants
        return None
    got = got.reshape(-1)
    return next(
        (name for name, fn in KNOWN_FUNCTIONS.items() if np.allclose(got, fn(x), rtol=1e-4, atol=1e-5)),
        None,
    )


def collapse_activations(mod: tvm.IRModule) -> tvm.IRModule:
    """Every chain worth a table becomes one tvmq.elementwise call on its input tensor."""
    graph = build_graph(mod)
    users = users_of(graph)
    replacements: dict[relax.Call, relax.Call] = {}
    for chain in _chains(graph):
        members = {n.var for n in chain}
        leaving = [n for n in chain if any(u not in members for u in users[n.var])]
        if len(leaving) != 1 or leaving[0] is not chain[-1] or not _worth_a_table(chain):
            continue
        root = next(a for a in _tensor_args(chain[0].call) if a not in members)
        replacements[chain[-1].call] = elementwise(root, _chain(root, chain))
    return replace_calls(mod, replacements)
