"""Element-wise float functions: their numpy meaning, and the op that holds a collapsed chain of them.

A lookup table needs the float function it implements, evaluated on every int8 input level; the
functions are the Relax ops the importer writes (erf, clip, divide, ...) and chains of them. `NUMPY`
gives each element-wise Relax op its numpy meaning. `tvmq.elementwise` is one call standing for a
chain of such ops on one tensor (x * clip(x + 3, 0, 6) / 6, GELU's erf form): its attributes keep the
chain as a Relax function of that tensor, so a float build legalizes it back into the same ops, and
`evaluate` runs it in numpy to fill a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from worker.quantize.graph import const_value, is_const, substitute

#: numpy meaning of one element-wise call, given its evaluated operands
Fn = Callable[[relax.Call, list[np.ndarray]], np.ndarray]

erf = np.vectorize(math.erf, otypes=[np.float64])
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def scalar_operand(arg: relax.Expr) -> float:
    """A scalar operand as the importer writes it: an IntImm/FloatImm (clip's bounds) or a constant."""
    return float(const_value(arg)) if is_const(arg) else float(arg.value)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(call: relax.Call, a: list[np.ndarray]) -> np.ndarray:
    beta, threshold = float(call.attrs.beta), float(call.attrs.threshold)
    bx = beta * a[0]
    return np.where(bx > threshold, a[0], np.logaddexp(0.0, bx) / beta)


def _prelu(call: relax.Call, a: list[np.ndarray]) -> np.ndarray:
    x, alpha = a
    ndim = len(call.args[0].ty.shape)
    shape = [1] * ndim
    shape[int(call.attrs.axis) % ndim] = alpha.size
    return np.where(x > 0, x, alpha.reshape(shape) * x)


def _selu(x: np.ndarray) -> np.ndarray:
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


NUMPY: dict[str, Fn] = {
    "add": lambda call, a: a[0] + a[1],
    "subtract": lambda call, a: a[0] - a[1],
    "multiply": lambda call, a: a[0] * a[1],
    "divide": lambda call, a: a[0] / a[1],
    "maximum": lambda call, a: np.maximum(a[0], a[1]),
    "minimum": lambda call, a: np.minimum(a[0], a[1]),
    "power": lambda call, a: np.power(a[0], a[1]),
    "clip": lambda call, a: np.clip(a[0], scalar_operand(call.args[1]), scalar_operand(call.args[2])),
    "negative": lambda call, a: -a[0],
    "abs": lambda call, a: np.abs(a[0]),
    "nn.relu": lambda call, a: np.maximum(a[0], 0.0),
    "nn.relu6": lambda call, a: np.clip(a[0], 0.0, 6.0),
    "nn.leakyrelu": lambda call, a: np.where(a[0] > 0, a[0], float(call.attrs.alpha) * a[0]),
    "nn.prelu": _prelu,
    "sigmoid": lambda call, a: sigmoid(a[0]),
    "tanh": lambda call, a: np.tanh(a[0]),
    "exp": lambda call, a: np.exp(a[0]),
    "log": lambda call, a: np.log(a[0]),
    "erf": lambda call, a: erf(a[0]),
    "nn.gelu": lambda call, a: 0.5 * a[0] * (1.0 + erf(a[0] / math.sqrt(2.0))),
    "nn.gelu_tanh": lambda call, a: (
        0.5 * a[0] * (1.0 + np.tanh(SQRT_2_OVER_PI * (a[0] + 0.044715 * a[0] ** 3)))
    ),
    "nn.silu": lambda call, a: a[0] * sigmoid(a[0]),
    "nn.softplus": _softplus,
    "nn.selu": lambda call, a: _selu(a[0]),
}


def evaluate_call(call: relax.Call, env: dict[relax.Expr, np.ndarray]) -> np.ndarray:
    """One element-wise call in float64; tensor operands come from `env` or are constants."""
    args = [
        env[a] if a in env else const_value(a).astype(np.float64)
        for a in call.args
        if isinstance(a, relax.Var) or is_const(a)
    ]
    with np.errstate(all="ignore"):  # log(0) = -inf, overflowing exp: the table clips them
        return NUMPY[call.op.name.removeprefix("relax.")](call, args)


# -- tvmq.elementwise: a chain of element-wise calls on one tensor, as one call -------------------
ELEMENTWISE_OP = "relax.tvmq.elementwise"


@dataclass(frozen=True)
class Chain:
    """calls[k] computes variables[k + 1] from variables[0] (the input) and the ones before it;
    the last variable is the result."""

    variables: list[relax.Var]
    calls: list[relax.Call]
    function: str

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        env: dict[relax.Expr, np.ndarray] = {self.variables[0]: x}
        for var, call in zip(self.variables[1:], self.calls, strict=True):
            env[var] = evaluate_call(call, env)
        return env[self.variables[-1]]


def chain_of(call: relax.Call) -> Chain:
    """The chain a tvmq.elementwise call holds."""
    a = call.attrs
    return Chain(list(a["variables"]), list(a["calls"]), str(a["function"]))


def elementwise(x: relax.Expr, chain: Chain) -> relax.Call:
    """One call computing `chain` on `x`."""
    attrs = tvm.ir.make_node(
        "ir.DictAttrs", variables=chain.variables, calls=chain.calls, function=chain.function
    )
    return relax.Call(_OP, [x], attrs)


def _legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """The float build: the chain's own ops again (LegalizeOps then lowers each of them)."""
    chain = chain_of(call)
    env: dict[relax.Var, relax.Expr] = {chain.variables[0]: call.args[0]}
    for var, inner in zip(chain.variables[1:], chain.calls, strict=True):
        env[var] = bb.emit(substitute(inner, env))
    return env[chain.variables[-1]]


def _register_op() -> tvm.ir.Op:
    """Registered once per process, when this module is first imported."""
    tvm_ffi.get_global_func("ir.RegisterOp")(ELEMENTWISE_OP, "")
    op = tvm.ir.Op.get(ELEMENTWISE_OP)
    tvm_ffi.get_global_func("ir.OpSetNumInputs")(op, 1)
    tvm_ffi.get_global_func("ir.OpAddArgument")(op, "x", "Tensor", "the chain's input")
    op.set_attr("FInferType", lambda call, ctx: call.attrs["variables"][-1].ty)
    op.set_attr("FPurity", True)
    op.set_attr("FLegalize", _legalize)
    return op


_OP = _register_op()
