"""Prerequisite optimize: the graph the quantizer reasons about.

Weights become folded constants (transposes, bias reshapes and batch-norms disappear into them),
and a few importer artefacts are turned back into plain Relax ops so op rules can see them: the
ONNX importer lowers Clip/ReLU6 to opaque `call_tir(maximum|minimum)` calls.
"""

from __future__ import annotations

import re

import tvm
from tvm import relax
from tvm.relax import op as R

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
    mod = tvm.transform.Sequential(
        [
            relax.transform.FoldConstant(),
            relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination(["main"]),
        ]
    )(mod)
    return mod
