"""Classify the kernels of a built module by dtype: which run in integers, and which group each is in.

Classification reads the module as the builder lowered it (quantize/lowering.py): the PrimFuncs
the VM functions call after the packed-kernel rewrite and fusion, named as the library exports
them, with every dtype their bodies compute in. So what it proves is what the compiled code
does. A kernel is integral when every dtype it touches (its buffers, the values it computes, its
casts) is an integer, or when every op it computes is an integer op of the module given to the
build and the float values are the lowering's own (`exact_float`: the packed-kernel rewrite
computes stride-1 grouped int8 convs in float32, exact for their tap count).

Groups: `prefix` = float kernels feeding the integer region with no integer kernel before them
(input quantization, skipped first layers); `core` = integer kernels and any float kernel between
integer kernels; `suffix` = float kernels after the integer region (dequantize, float heads);
`float_fallback` = float kernels that never touch the integer region.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import tvm
from tvm import relax

from worker.quantize.graph import dtypes_of, shape_of
from worker.quantize.lowering import KernelCall, Lowering, kernel_calls
from worker.quantize.ops import rule_for

#: Arithmetic the quantizer and the importer wrap around every op (requantization, bias, clamps,
#: casts): a kernel is named by the first op outside this set. Activations with their own cost
#: (sigmoid, tanh, exp, ...) are not in it, so a float sigmoid kernel is a "sigmoid".
ELEMENTWISE = frozenset(
    {"add", "subtract", "multiply", "divide", "floor_divide", "power", "maximum", "minimum"}
    | {"negative", "abs", "round", "floor", "ceil", "clip", "astype", "right_shift", "left_shift"}
    | {"nn.relu", "where", "less", "greater", "equal", "not_equal", "less_equal", "greater_equal"}
)
_COUNTER = re.compile(r"\d+$")


@dataclass
class OpInfo:
    var: str  # a unique key: the kernel's call site, or (Relax-level) the binding's name
    name: str  # the kernel as the library exports it (or the binding's name)
    relax_op: str  # the op that gives the kernel its kind: "nn.conv2d", "quantize", ...
    inputs: list[str]
    outputs: list[str]
    integral: bool
    macs: int
    group: str = ""
    relax_ops: list[str] = field(default_factory=list)  # every Relax op the kernel computes
    origins: list[str] = field(default_factory=list)  # names of the bindings it computes
    produces: list[str] = field(default_factory=list)  # those it writes out, one per output
    function: str = ""  # the VM function that calls it
    computes: list[str] = field(default_factory=list)  # every data dtype of its body
    #: integral through float arithmetic: every op it computes is an integer op of the module given
    #: to the build, and the float values in between are the builder's exact choice
    exact_float: bool = False


def float_reason(op: OpInfo, reasons: dict[str, str]) -> str | None:
    """Why a float kernel is float, as the partition said it of the bindings it computes (None
    when none of them has a reason: the quantizer's own conversions, or an integral kernel)."""
    if op.integral:
        return None
    found = dict.fromkeys(reasons[name] for name in op.origins if name in reasons)
    return "; ".join(found) or None


def is_int(dtype: str) -> bool:
    return dtype.startswith(("int", "uint", "bool"))


@dataclass
class _SourceOp:
    """An op binding of the module given to the build."""

    var: str  # the binding's name (the partition's reasons are keyed by it)
    name: str
    macs: int
    integral: bool  # its operands and results are integers: the quantizer made it an integer op


def _source_ops(mod: tvm.IRModule) -> dict[relax.Var, _SourceOp]:
    out: dict[relax.Var, _SourceOp] = {}
    for func in mod.functions.values():
        if not isinstance(func, relax.Function):
            continue
        for block in func.body.blocks:
            for b in block.bindings:
                v = b.value
                if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op):
                    name = v.op.name.removeprefix("relax.")
                    rule = rule_for(name)
                    macs = rule.macs(v, shape_of(b.var)) if rule is not None and rule.macs is not None else 0
                    dtypes = [d for a in v.args if isinstance(a, relax.Expr) for d in dtypes_of(a)]
                    out[b.var] = _SourceOp(
                        b.var.name, name, macs, all(map(is_int, dtypes + dtypes_of(b.var)))
                    )
                elif isinstance(v, relax.Var) and v in out:
                    out[b.var] = out[v]  # an alias (`gv = lv1`): the build binds the op to it
    return out


def kernel_kind(relax_ops: list[str], inputs: list[str], outputs: list[str], symbol: str) -> str:
    """The op a kernel is named by: its first op that counts MACs, else its first op that is not
    element-wise, else what its dtypes say it does (quantize, dequantize, elementwise)."""
    counted = [op for op in relax_ops if (rule := rule_for(op)) is not None and rule.macs is not None]
    shaped = [op for op in relax_ops if op not in ELEMENTWISE]
    if counted or shaped:
        return (counted or shaped)[0]
    if not relax_ops:
        return _COUNTER.sub("", symbol).strip("_")
    int_out = all(map(is_int, outputs))
    if int_out and not all(map(is_int, inputs)):
        return "quantize"
    if not int_out and any(map(is_int, inputs)):
        return "dequantize"
    return "elementwise"


def _op_info(call: KernelCall, ops: dict[relax.Var, _SourceOp]) -> OpInfo:
    source = {v: ops[v] for v in call.origins if v in ops}
    known = list(source.values())
    relax_ops = [op.name for op in known]
    strict = all(map(is_int, call.inputs + call.outputs + call.computes))
    # float arithmetic the builder chose for integer ops (e.g. stride-1 grouped int8 convs in
    # float32, exact for their tap count): every op of the source module the kernel computes is an
    # integer op, and its float values are computed by bindings the builder added
    exact_float = not strict and bool(known) and all(op.integral for op in known)
    kind_dtypes = (["int32"], ["int32"]) if exact_float else (call.inputs, call.outputs)
    return OpInfo(
        var=call.site,
        name=call.symbol,
        relax_op=kernel_kind(relax_ops, *kind_dtypes, call.symbol),
        inputs=call.inputs,
        outputs=call.outputs,
        integral=strict or exact_float,
        exact_float=exact_float,
        macs=sum(op.macs for op in known),
        relax_ops=relax_ops,
        origins=[source[v].var if v in source else v.name for v in call.origins],
        produces=[(ops[v].var if v in ops else v.name) for v in call.produces],
        function=call.function,
        computes=call.computes,
    )


#: integer dtypes every value of which float32 holds exactly
_EXACT_IN_FLOAT32 = frozenset({"bool", "int8", "uint8", "int16", "uint16"})


def mark_exact_feeds(ops: list[tuple[OpInfo, list[str]]]) -> None:
    """A kernel the builder added on its own (it computes no op of the module given to the build)
    that turns small integers into float32 only for exact-float kernels is part of their exact
    float lowering: the int8 -> float32 cast FuseOps leaves standalone before a grouped conv
    computed in float32."""
    readers: dict[str, list[OpInfo]] = defaultdict(list)
    for op, ups in ops:
        for u in ups:
            readers[u].append(op)
    for op, _ in reversed(ops):
        users = readers[op.var]
        if (
            not op.integral
            and not op.relax_ops
            and op.inputs
            and set(op.inputs) <= _EXACT_IN_FLOAT32
            and users
            and all(u.exact_float for u in users)
        ):
            op.integral = op.exact_float = True


def artifact_ops(source: tvm.IRModule, lowering: Lowering) -> list[tuple[OpInfo, list[str]]]:
    """(kernel, sites of the kernels it reads) for every kernel call of the built module `main`;
    `source` is the module that was given to the build (its ops and MACs name the kernels)."""
    ops = _source_ops(source)
    infos = [(_op_info(call, ops), call.upstream) for call in kernel_calls(lowering)]
    mark_exact_feeds(infos)
    return infos


def classify(ops: list[tuple[OpInfo, list[str]]]) -> list[OpInfo]:
    by_var = {op.var: op for op, _ in ops}
    int_ancestor: dict[str, bool] = {}
    for op, ups in ops:
        # a kernel that multiplies integers itself (a conv with a float op fused after it) is
        # downstream of the quantization: if it computes floats, it is inside the core, not a prefix
        own = op.macs > 0 and any(is_int(d) for d in op.inputs)
        int_ancestor[op.var] = own or any(by_var[u].integral or int_ancestor[u] for u in ups)
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
