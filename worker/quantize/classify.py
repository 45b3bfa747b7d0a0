"""Classify ops by dtype: which TIR functions a module runs in integers, and which group each is in.

Classification works on the module after LegalizeOps, from each PrimFunc's buffer dtypes (not
from the annotated graph), so what it proves is what the compiled code does. An op is integral
when every buffer it touches is an integer. Groups: `prefix` = float ops feeding the integer
region with no integer op before them (input quantization, skipped first layers); `core` = integer
ops and any float op between integer ops; `suffix` = float ops after the integer region
(dequantize, float heads); `float_fallback` = float ops that never touch the integer region.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import tvm
from tvm import relax

from worker.quantize.graph import shape_of
from worker.quantize.ops import rule_for


@dataclass
class OpInfo:
    var: str
    name: str
    relax_op: str
    inputs: list[str]
    outputs: list[str]
    integral: bool
    macs: int
    group: str = ""


def _is_int(dtype: str) -> bool:
    return dtype.startswith(("int", "uint", "bool"))


def macs_by_var(func: relax.Function) -> dict[str, int]:
    """Multiply-accumulates of every binding whose op rule counts them (OpRule.macs)."""
    out: dict[str, int] = {}
    for block in func.body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op):
                rule = rule_for(v.op.name.removeprefix("relax."))
                if rule is not None and rule.macs is not None:
                    out[b.var.name] = rule.macs(v, shape_of(b.var))
    return out


def lowered_ops(mod: tvm.IRModule, func_name: str = "main") -> list[tuple[OpInfo, list[str]]]:
    """(op, names of the earlier ops it reads) for every call_tir in `func_name` after legalization."""
    macs = macs_by_var(mod[func_name])
    relax_ops = {
        b.var.name: b.value.op.name.removeprefix("relax.")
        for block in mod[func_name].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
    }
    lowered = relax.transform.LegalizeOps()(mod)
    producers: dict[str, list[str]] = {}  # var -> ops whose results flow into it (through tuples)
    ops: list[tuple[OpInfo, list[str]]] = []
    for block in lowered[func_name].body.blocks:
        for b in block.bindings:
            v = b.value
            used = [x.name for x in relax.analysis.free_vars(v)] if isinstance(v, relax.Expr) else []
            upstream = sorted({p for u in used for p in producers.get(u, [])})
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.name == "relax.call_tir":
                prim = lowered[v.args[0]]
                dtypes = [str(p.dtype) for p in prim.params]
                n_out = len(v.ty.fields) if isinstance(v.ty, relax.TupleType) else 1
                info = OpInfo(
                    b.var.name,
                    v.args[0].name_hint,
                    relax_ops.get(b.var.name, ""),
                    dtypes[:-n_out],
                    dtypes[-n_out:],
                    all(_is_int(d) for d in dtypes),
                    macs.get(b.var.name, 0),
                )
                ops.append((info, upstream))
                producers[b.var.name] = [b.var.name]
            else:
                producers[b.var.name] = upstream
    return ops


def classify(ops: list[tuple[OpInfo, list[str]]]) -> list[OpInfo]:
    by_var = {op.var: op for op, _ in ops}
    int_ancestor: dict[str, bool] = {}
    for op, ups in ops:
        int_ancestor[op.var] = any(by_var[u].integral or int_ancestor[u] for u in ups)
    int_descendant: dict[str, bool] = defaultdict(bool)
    for op, ups in reversed(ops):
        for u in ups:
            int_descendant[u] = int_descendant[u] or op.integral or int_descendant[op.var]
    for op, _ in ops:
        if op.integral or (int_ancestor[op.var] and int_descendant[op.var]):
            op.group = "core"
        elif int_descendant[op.var]:
            op.group = "prefix"
        elif int_ancestor[op.var]:
            op.group = "suffix"
        else:
            op.group = "float_fallback"
    return [op for op, _ in ops]
