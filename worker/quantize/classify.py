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

import numpy as np
import tvm
from tvm import relax

_MAC_OPS = {"relax.nn.conv2d", "relax.nn.conv2d_transpose", "relax.matmul"}


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


def _macs(call: relax.Call, out_shape: tuple[int, ...]) -> int:
    name = call.op.name
    w_shape = [int(d) for d in call.args[1].ty.shape]
    out = int(np.prod(out_shape))
    if name == "relax.nn.conv2d":
        return out * int(np.prod(w_shape[1:]))
    if name == "relax.nn.conv2d_transpose":
        groups = int(call.attrs.groups)
        return (
            int(np.prod([int(d) for d in call.args[0].ty.shape]))
            * (w_shape[1] * groups)
            * int(np.prod(w_shape[2:]))
            // max(groups, 1)
        )
    return out * int(call.args[0].ty.shape[-1])


def macs_by_var(func: relax.Function) -> dict[str, int]:
    out: dict[str, int] = {}
    for block in func.body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.name in _MAC_OPS:
                out[b.var.name] = _macs(v, tuple(int(d) for d in b.var.ty.shape))
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
