"""Prerequisite optimize: the graph the quantizer reasons about.

Weights become folded constants (transposes, bias reshapes and batch-norms disappear into them),
and a few importer artefacts are turned back into plain Relax ops so op rules can see them: the
ONNX importer lowers Clip/ReLU6 to opaque `call_tir(maximum|minimum)` calls.
"""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import relax
from tvm.relax import dpl
from tvm.relax import op as R

from worker.quantize.activations import collapse_activations
from worker.quantize.graph import const_value
from worker.quantize.layer_norm_fold import fold_layer_norms

_TE_BINARY = {"maximum": R.maximum, "minimum": R.minimum}


@relax.expr_functor.mutator
class _RestoreBinaryOps(relax.PyExprMutator):
    """call_tir(cls.maximum, (x, c)) -> R.maximum(x, c), when the PrimFunc is TOPI's broadcast op."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod_ = mod

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir"):
            return call
        gvar, args = call.args[0], call.args[1]
        base = re.sub(r"\d+$", "", gvar.name_hint)
        if base in _TE_BINARY and isinstance(args, relax.Tuple) and len(args.fields) == 2:
            return _TE_BINARY[base](args.fields[0], args.fields[1])
        return call


def restore_binary_ops(mod: tvm.IRModule) -> tvm.IRModule:
    main = _RestoreBinaryOps(mod).visit_expr(mod["main"])
    mod = tvm.IRModule({**{gv: mod[gv] for gv in mod.get_global_vars() if gv.name_hint != "main"}})
    mod["main"] = main
    return relax.transform.DeadCodeElimination(["main"])(mod)


def _fold_standalone_batch_norm(mod: tvm.IRModule) -> tvm.IRModule:
    """((x - mean) / std) * gamma + beta -> x * s + t: a batch-norm not after a conv (pre-activation
    ResNets) decomposes into four float ops; as one multiply + one add with constants both have
    int8 rules, and there is one requantization instead of four."""
    x, mean, std, gamma, beta = dpl.wildcard(), dpl.is_const(), dpl.is_const(), dpl.is_const(), dpl.is_const()
    pattern = dpl.is_op("relax.add")(
        dpl.is_op("relax.multiply")(
            dpl.is_op("relax.divide")(dpl.is_op("relax.subtract")(x, mean), std), gamma
        ),
        beta,
    )

    def rewrite(expr: relax.Expr, match: dict) -> relax.Expr:
        m, d, g, b = (const_value(match[p]).astype(np.float64) for p in (mean, std, gamma, beta))
        scale = g / d
        dtype = str(expr.ty.dtype)
        return R.add(
            R.multiply(match[x], relax.const(scale.astype(dtype))), relax.const((b - m * scale).astype(dtype))
        )

    mod["main"] = dpl.rewrite_call(pattern, rewrite, mod["main"])
    return mod


def prerequisite_optimize(mod: tvm.IRModule) -> tvm.IRModule:
    seq = tvm.transform.Sequential(
        [
            relax.transform.FoldBatchnormToConv2D(),
            relax.transform.DecomposeOpsForInference(),
            relax.transform.FoldConstant(),
            relax.transform.CanonicalizeBindings(),
        ]
    )
    mod = seq(mod)
    mod = restore_binary_ops(mod)
    mod = _fold_standalone_batch_norm(mod)
    mod = fold_layer_norms(mod)
    mod = collapse_activations(mod)
    mod = tvm.transform.Sequential(
        [
            relax.transform.FoldConstant(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination(["main"]),
        ]
    )(mod)
    return mod
