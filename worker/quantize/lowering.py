"""What the builder made of a module: the kernels its VM functions call, in call order, each with
the bindings of the built module it computes and the dtypes it computes in.

The builder runs its pipeline (ours or TVM's fallback) with a `LoweringRecorder` installed and
hands over the modules it saw as a `Lowering`; nothing here compiles. Provenance is followed
through the passes that decide which code runs in which kernel:

- up to FuseOps every binding of the module given to the build keeps its Var (LegalizeOps and
  the packed-kernel rewrite replace values, not variables), so a call bound there is traced to
  the source binding by identity;
- FuseOps moves bindings into grouped functions that call the same legalized PrimFuncs on their
  parameters; evaluating a group's body on its call's arguments finds, for each inner call, the
  binding it was (same PrimFunc, same arguments);
- FuseTIR turns each group into one PrimFunc named like the group, and keeps the calling
  binding's Var, as does RewriteDataflowReshape (whose reshapes become views, not kernels).

The kernels are read after RewriteDataflowReshape: what follows (CallTIRRewrite, memory planning,
VM lowering) allocates and frees but calls no other kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import tvm
from tvm import relax

#: Every dtype a PrimFunc names (buffers, loads, casts, constants), from its JSON form: the 0.27
#: wheel exposes no TIR visitor to Python.
_DTYPE = re.compile(r'"dtype":"([a-z0-9_]+)"')
_NOT_DATA = frozenset({"handle", "void", ""})


@tvm.ir.instrument.pass_instrument
class LoweringRecorder:
    """Keeps the modules around FuseOps and after RewriteDataflowReshape of the last pipeline run
    (ours, or TVM's fallback after ours failed: each starts with LegalizeOps). TVM's default
    pipeline fuses nothing: then every kernel is one legalized op, bound to its source's Var."""

    def __init__(self) -> None:
        self.modules: dict[str, tvm.IRModule] = {}

    def run_before_pass(self, mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        if info.name == "LegalizeOps":
            self.modules.clear()  # a new pipeline run: forget a failed one's modules
        elif info.name == "FuseOps":
            self.modules["fuse_in"] = mod

    def run_after_pass(self, mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        if info.name == "FuseOps":
            self.modules["fuse_out"] = mod
        elif info.name == "RewriteDataflowReshape":
            self.modules["kernels"] = mod

    def lowering(self) -> Lowering:
        if "kernels" not in self.modules:
            raise RuntimeError("the build pipeline ran no RewriteDataflowReshape pass")
        kernels = self.modules["kernels"]
        return Lowering(self.modules.get("fuse_in", kernels), self.modules.get("fuse_out", kernels), kernels)


@dataclass
class Lowering:
    """The built module at three points of the build pipeline (see the module docstring)."""

    fuse_in: tvm.IRModule
    fuse_out: tvm.IRModule
    kernels: tvm.IRModule


@dataclass
class KernelCall:
    """One call of a PrimFunc by a VM function, in the order the VM makes them."""

    site: str  # "<function>:<n>", unique per call
    symbol: str  # the name the library exports it under (its global symbol)
    function: str  # the VM function that calls it
    inputs: list[str]  # dtypes of its input buffers
    outputs: list[str]  # dtypes of its output buffers
    computes: list[str]  # every data dtype of its body (buffers, values, casts), sorted
    origins: list[relax.Var] = field(default_factory=list)  # source bindings it computes
    produces: list[relax.Var] = field(default_factory=list)  # those of them it writes out
    upstream: list[str] = field(default_factory=list)  # sites of the kernels it reads from


def _bindings(func: relax.Function) -> list[relax.VarBinding]:
    return [b for block in func.body.blocks for b in block.bindings if isinstance(b, relax.VarBinding)]


def _is_call_tir(value: relax.Expr) -> bool:
    return (
        isinstance(value, relax.Call)
        and isinstance(value.op, tvm.ir.Op)
        and value.op.name == "relax.call_tir"
    )


def _callee(mod: tvm.IRModule, value: relax.Expr) -> relax.Function | None:
    """The Relax function `value` calls (a VM function or a FuseOps group), if it calls one."""
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
        func = mod.functions.get(value.op)
        if isinstance(func, relax.Function):
            return func
    return None


def _is_group(func: relax.Function) -> bool:
    return func.attrs is not None and "Primitive" in func.attrs


class _Groups:
    """FuseOps' groups traced back to the bindings of its input (see the module docstring)."""

    def __init__(self, lowering: Lowering) -> None:
        self.members: dict[str, list[relax.Var]] = {}  # group name -> the bindings it computes
        self.outputs: dict[str, list[relax.Var]] = {}  # group name -> the bindings it returns
        for gvar, func in lowering.fuse_out.functions.items():
            if isinstance(func, relax.Function) and not _is_group(func) and gvar in lowering.fuse_in:
                self._function(lowering.fuse_out, func, lowering.fuse_in[gvar])

    def _function(self, mod: tvm.IRModule, func: relax.Function, before: relax.Function) -> None:
        index = {self._key(b.value, {}): b.var for b in _bindings(before) if _is_call_tir(b.value)}
        env: dict[relax.Var, object] = {}
        for b in _bindings(func):
            group = _callee(mod, b.value)
            if group is not None and _is_group(group):
                args = [self._resolve(a, env) for a in b.value.args]
                env[b.var] = self._group(b.value.op.name_hint, group, args, index)
            elif isinstance(b.value, relax.TupleGetItem):
                inner = self._resolve(b.value.tuple_value, env)
                if isinstance(inner, list):
                    env[b.var] = inner[b.value.index]

    def _group(
        self, name: str, func: relax.Function, args: list[object], index: dict[tuple, relax.Var]
    ) -> object:
        env: dict[relax.Var, object] = dict(zip(func.params, args, strict=True))
        members: list[relax.Var] = []
        for b in _bindings(func):
            if _is_call_tir(b.value):
                source = index.get(self._key(b.value, env))
                if source is not None:
                    members.append(source)
                    env[b.var] = source
            elif isinstance(b.value, relax.TupleGetItem):
                inner = self._resolve(b.value.tuple_value, env)
                if isinstance(inner, list):
                    env[b.var] = inner[b.value.index]
            else:
                env[b.var] = self._resolve(b.value, env)
        result = self._resolve(func.body.body, env)
        self.members[name] = members
        self.outputs[name] = [v for v in _flatten(result) if isinstance(v, relax.Var)]
        return result

    @staticmethod
    def _resolve(expr: relax.Expr, env: dict[relax.Var, object]) -> object:
        if isinstance(expr, relax.Tuple):
            return [_Groups._resolve(f, env) for f in expr.fields]
        if isinstance(expr, relax.Var):
            return env.get(expr, expr)
        return expr

    @staticmethod
    def _key(call: relax.Call, env: dict[relax.Var, object]) -> tuple:
        args = [_Groups._resolve(a, env) for a in call.args[1].fields]
        return (call.args[0].name_hint, *(tuple(_flatten(a)) if isinstance(a, list) else a for a in args))


def _flatten(value: object) -> list[object]:
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _dtypes_of(prim: tvm.tirx.PrimFunc) -> list[str]:
    return sorted(set(_DTYPE.findall(tvm.ir.save_json(prim))) - _NOT_DATA)


def _out_count(call: relax.Call) -> int:
    return len(call.ty.fields) if isinstance(call.ty, relax.TupleType) else 1


def _union(value: object) -> frozenset[str]:
    return frozenset(site for part in _flatten(value) for site in part)


def _site_order(site: str) -> int:
    return int(site.rsplit(":", 1)[1])


def kernel_calls(lowering: Lowering, entry: str = "main") -> list[KernelCall]:
    """Every PrimFunc call `entry` makes, following its calls into other VM functions."""
    mod = lowering.kernels
    groups = _Groups(lowering)
    sources = {
        b.var
        for func in lowering.fuse_in.functions.values()
        if isinstance(func, relax.Function)
        for b in _bindings(func)
    }
    computes: dict[str, list[str]] = {}
    calls: list[KernelCall] = []

    def flow(expr: relax.Expr, env: dict[relax.Var, object]) -> object:
        """The sites of the kernels a value was computed by: a set, or a list per tuple field."""
        if isinstance(expr, relax.Var):
            return env.get(expr, frozenset())
        if isinstance(expr, relax.Tuple):
            return [flow(f, env) for f in expr.fields]
        if isinstance(expr, relax.TupleGetItem):
            inner = flow(expr.tuple_value, env)
            return inner[expr.index] if isinstance(inner, list) else inner
        if isinstance(expr, relax.Call):
            return frozenset().union(*(_union(flow(a, env)) for a in expr.args))
        return frozenset()

    def kernel(function: str, var: relax.Var, call: relax.Call, env: dict[relax.Var, object]) -> str:
        gvar = call.args[0]
        prim = mod[gvar]
        attrs = prim.attrs or {}
        symbol = str(attrs["global_symbol"]) if "global_symbol" in attrs else gvar.name_hint
        if symbol not in computes:
            computes[symbol] = _dtypes_of(prim)
        dtypes = [str(p.dtype) for p in prim.params]
        n_in = len(dtypes) - _out_count(call)
        if gvar.name_hint in groups.members:
            origins, produces = groups.members[gvar.name_hint], groups.outputs[gvar.name_hint]
        elif var in sources:
            origins, produces = [var], [var]
        else:
            origins, produces = [], []
        site = f"{function}:{len(calls)}"
        upstream = sorted(_union(flow(call.args[1], env)), key=_site_order)
        calls.append(
            KernelCall(
                site,
                symbol,
                function,
                dtypes[:n_in],
                dtypes[n_in:],
                computes[symbol],
                list(origins),
                list(produces),
                upstream,
            )
        )
        return site

    def walk(name: str, args: list[object]) -> object:
        func = mod[name]
        env: dict[relax.Var, object] = dict(zip(func.params, args, strict=True))
        for b in _bindings(func):
            value = b.value
            if _callee(mod, value) is not None:
                env[b.var] = walk(value.op.name_hint, [flow(a, env) for a in value.args])
            elif _is_call_tir(value):
                env[b.var] = frozenset({kernel(name, b.var, value, env)})
            else:
                env[b.var] = flow(value, env)
        return flow(func.body.body, env)

    walk(entry, [frozenset() for _ in mod[entry].params])
    return calls
