"""Partition conversions: split main into quantize_inputs / quantized_main / dequantize_outputs,
and enforce `fully_integral` on the kernels of the built module.

The split follows the integrality classification (quantize/classify.py) of main's bindings:
prefix and float-fallback bindings go to quantize_inputs, the core to quantized_main, the suffix
to dequantize_outputs; values crossing a boundary become tuple results and parameters. The
classification guarantees no edge runs backwards (a prefix op has no integer ancestor, a suffix
op no integer descendant).
"""

from __future__ import annotations

import tvm
from tvm import relax

from worker.errors import NotFullyIntegralError
from worker.quantize.classify import OpInfo, classify, float_reason, is_int
from worker.quantize.graph import dtypes_of, is_tensor, substitute, with_functions_of


def _bindings(func: relax.Function) -> list[relax.VarBinding]:
    return [b for block in func.body.blocks for b in block.bindings]


def relax_groups(func: relax.Function) -> dict[str, str]:
    """Group of every binding of `func` from the Relax-level dtypes (same rule as the TIR check)."""
    ops: list[tuple[OpInfo, list[str]]] = []
    names = {b.var.name for b in _bindings(func)}
    for b in _bindings(func):
        used = [
            v for v in relax.analysis.free_vars(b.value) if is_tensor(v) or isinstance(v.ty, relax.TupleType)
        ]
        ins = [d for v in used for d in dtypes_of(v)]
        outs = dtypes_of(b.var)
        integral = bool(ins + outs) and all(d.startswith("int") for d in ins + outs)
        ops.append(
            (
                OpInfo(b.var.name, b.var.name, "", ins, outs, integral, 0),
                [v.name for v in used if v.name in names],
            )
        )
    return {op.var: op.group for op in classify(ops)}


def split_conversions(mod: tvm.IRModule) -> tvm.IRModule:
    func = mod["main"]
    groups = relax_groups(func)
    part = {"prefix": 0, "float_fallback": 0, "core": 1, "suffix": 2}
    stage_of = {b.var: part[groups[b.var.name]] for b in _bindings(func)}
    for p in func.params:
        stage_of[p] = -1
    stages: list[list[relax.VarBinding]] = [[], [], []]
    for b in _bindings(func):
        stages[stage_of[b.var]].append(b)
    output = func.body.body
    # values each stage needs from earlier stages (or main's params)
    needs: list[list[relax.Var]] = []
    for s, binds in enumerate(stages):
        seen: list[relax.Var] = []
        exprs = [b.value for b in binds] + ([output] if s == 2 else [])
        for e in exprs:
            for v in relax.analysis.free_vars(e):
                if stage_of.get(v, -1) < s and v not in seen:
                    seen.append(v)
        needs.append(seen)
    # what each stage returns: its values that later stages need, in first-use order
    exports = [
        list(dict.fromkeys(v for t in range(s + 1, 3) for v in needs[t] if stage_of.get(v, -1) == s))
        for s in range(3)
    ]
    names = ("quantize_inputs", "quantized_main", "dequantize_outputs")
    bb = relax.BlockBuilder()
    gvars = []
    for s, binds in enumerate(stages):
        params = [relax.Var(v.name, v.ty) for v in needs[s]]
        mapping = dict(zip(needs[s], params, strict=True))
        with bb.function(names[s], params, private=False):
            with bb.dataflow():
                for b in binds:
                    mapping[b.var] = bb.emit(substitute(b.value, mapping), name_hint=b.var.name)
                result = (
                    substitute(output, mapping) if s == 2 else relax.Tuple([mapping[v] for v in exports[s]])
                )
                gv = bb.emit_output(result)
            gvars.append(bb.emit_func_output(gv))
    main_params = [relax.Var(p.name, p.ty) for p in func.params]
    with bb.function("main", main_params, attrs=dict(func.attrs) if func.attrs else None):
        env: dict[relax.Var, relax.Expr] = dict(zip(func.params, main_params, strict=True))
        with bb.dataflow():
            for s in range(3):
                call = bb.emit(relax.Call(gvars[s], [env[v] for v in needs[s]]))
                if s == 2:
                    gv = bb.emit_output(call)
                    break
                for i, v in enumerate(exports[s]):
                    env[v] = bb.emit(relax.TupleGetItem(call, i))
        bb.emit_func_output(gv)
    return with_functions_of(bb.get(), mod)


def check_fully_integral(ops: list[OpInfo], reasons: dict[str, str]) -> None:
    """Raise E_NOT_FULLY_INTEGRAL naming each float kernel inside the core of the built module
    (classify.artifact_ops: the kernels the library calls), with its ops, dtypes and why."""
    bad = [op for op in ops if op.group == "core" and not op.integral]
    if bad:
        listed = "; ".join(_describe(op, float_reason(op, reasons)) for op in bad)
        raise NotFullyIntegralError(
            f"{len(bad)} float kernel(s) inside the quantized core: {listed}. Quantize them (remove "
            "them from exclude_ops / skip_conv_layers, set skip_dense_layer=false) or use "
            "partition_conversions='enabled'",
            ops=[op.name for op in bad],
        )


def _describe(op: OpInfo, reason: str | None) -> str:
    floats = [d for d in op.computes if not is_int(d)]
    computes = f", computes {','.join(floats)}" if floats else ""
    ops = f" [{', '.join(dict.fromkeys(op.relax_ops))}]" if op.relax_ops else ""
    why = f", {reason}" if reason else ""
    return f"{op.name}{ops} ({','.join(op.inputs)} -> {','.join(op.outputs)}{computes}{why})"
