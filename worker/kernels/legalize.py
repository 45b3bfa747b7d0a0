"""Our LegalizeOps rules: float transcendental ops on vectorizable approximations, and int32
floor division exactly in float64.

Float exp / erf / tanh / sigmoid / softmax. By default TVM lowers them to one scalar libm call per
element, which LLVM cannot vectorize: a GELU epilogue on a 64 x 80 x 120 map takes 164 ms (Zen 1).
TOPI's fast_exp, fast_erf and fast_tanh are polynomial approximations that vectorize (7.9 ms for
the same map, at most 3.3e-7 from the exact functions); sigmoid is lowered as
1 / (1 + fast_exp(-x)) (a SiLU or a DB head's probability map) and softmax as TOPI's fast_softmax.
Integer artifacts hold none of these ops (their activations are tables built at compile time);
float builds and float fallback ops are what this speeds up.

int32 floor_divide. x86 has no vector integer division: LLVM divides lane by lane with `idiv`
(the integer softmax divides every element by its row's sum: 1.6 ms of PP-OCRv6 rec's 19). In
float64 it is exact: for int32 a and b != 0, a / b rounded to float64 is off by less than
|a / b| * 2**-53 < 2**-22 / |b|, closer than any non-integer quotient comes to an integer (1 / |b|),
and an integer quotient is exact; so floor of it is floor(a / b). `vdivpd` divides four lanes.
The kernel stays integral in the report (its float values are the builder's own, exact_float).

They are rules of LegalizeOps rather than a rewrite before it, so they also reach the ops that
another op's legalization emits (the chain of a collapsed activation). TVM's FastMathTransform does
the float replacements as a rewrite, and fails on a call whose callee is a function (our quantized
modules call quantize_inputs).
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax, te, topi

Rule = Callable[[relax.BlockBuilder, relax.Call], relax.Expr]


def _sigmoid(x: te.Tensor) -> te.Tensor:
    one = tvm.tirx.const(1.0, x.dtype)
    return topi.divide(one, topi.add(one, topi.fast_exp(topi.negative(x))))


#: relax op -> its float32 lowering on an approximation.
_FAST: dict[str, Rule] = {
    "relax.exp": lambda bb, call: bb.call_te(topi.fast_exp, call.args[0]),
    "relax.erf": lambda bb, call: bb.call_te(topi.fast_erf, call.args[0]),
    "relax.tanh": lambda bb, call: bb.call_te(topi.fast_tanh, call.args[0]),
    "relax.sigmoid": lambda bb, call: bb.call_te(_sigmoid, call.args[0]),
    "relax.nn.softmax": lambda bb, call: bb.call_te(topi.nn.fast_softmax, call.args[0], int(call.attrs.axis)),
}


def _floor_divide_f64(a: te.Tensor, b: te.Tensor) -> te.Tensor:
    quotient = topi.divide(topi.cast(a, "float64"), topi.cast(b, "float64"))
    return topi.cast(topi.floor(quotient), "int32")


#: relax op -> its int32 lowering (every operand and the result int32).
_INT32: dict[str, Rule] = {
    "relax.floor_divide": lambda bb, call: bb.call_te(_floor_divide_f64, *call.args),
}


def _for_dtype(name: str, dtype: str, rule: Rule) -> Rule:
    """`rule` where the result and every tensor operand have `dtype`, TVM's lowering elsewhere."""
    default = tvm.ir.Op.get(name).get_attr("FLegalize")

    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        types = [call.ty, *(a.ty for a in call.args)]
        if all(isinstance(t, relax.TensorType) and str(t.dtype) == dtype for t in types):
            return rule(bb, call)
        return default(bb, call)

    return legalize


#: LegalizeOps(customize_legalize_map=LEGALIZE).
LEGALIZE: dict[str, Rule] = {
    **{name: _for_dtype(name, "float32", rule) for name, rule in _FAST.items()},
    **{name: _for_dtype(name, "int32", rule) for name, rule in _INT32.items()},
}


def legalize_passes() -> list[tvm.transform.Pass]:
    """cpu_generic's legalization passes, with LEGALIZE as LegalizeOps' rules."""
    return [
        relax.transform.LegalizeOps(customize_legalize_map=LEGALIZE),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
