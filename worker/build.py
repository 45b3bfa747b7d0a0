"""Build: compile a Relax module for the CPU target and export the shared library."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tvm
from tvm import relax

from worker.errors import BuildError, QConfigError
from worker.quantize.lowering import Lowering, LoweringRecorder

#: What TVM and our schedules raise when they cannot build a module (TVM's errors are RuntimeErrors).
#: The fallbacks below catch only these: a soft time limit or a cancellation (plain Exceptions of the
#: job runtime) must end the job, not send it down the fallback.
BUILD_FAILURES: tuple[type[Exception], ...] = (
    RuntimeError,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    AssertionError,
    NotImplementedError,
)

#: What a target without a CPU gets when this machine has AVX2: x86-64-v3 (AVX2 + FMA), so the
#: AVX2 int8 kernels are used by default while the artifact still runs on any AVX2 CPU (not only on
#: a CPU with this worker's AVX-512 or VNNI). Name an `mcpu` (or "native") to choose otherwise.
PORTABLE_AVX2_CPU = "haswell"
NATIVE = "native"


def native_target(
    spec: dict[str, Any], cpu: str | None = None, flags: frozenset[str] | None = None
) -> dict[str, Any]:
    """`mcpu: native` as the host CPU's LLVM name (LLVM's own "native" builds generic code here).

    Features the name implies but the host does not report (a VM hiding AVX-512) are switched off
    in `mattr`, so a native artifact never uses an instruction this machine cannot run. `cpu` and
    `flags` default to this machine's; given, they describe another host.
    """
    from tvm.target import codegen

    from worker.kernels import host

    cpu = host.system_cpu() if cpu is None else cpu
    flags = host.cpu_flags() if flags is None else flags
    named = tvm.target.Target({"kind": "llvm", "mcpu": cpu})
    implied = [f for f in host.LINUX_FLAGS if codegen.target_has_features(f, named)]
    user = spec.get("mattr", [])
    mattr = [
        *(f"-{f}" for f in host.unreported(implied, flags)),
        *([user] if isinstance(user, str) else user),
    ]
    return {**spec, "mcpu": cpu, **({"mattr": mattr} if mattr else {})}


def resolve_target(spec: dict[str, Any]) -> dict[str, Any]:
    """The target as built: `mcpu: native` becomes this worker's CPU; `{"kind": "llvm"}` alone becomes
    the portable AVX2 CPU when the host has AVX2 (TVM's plain llvm target is generic x86-64: no
    AVX2, so no fast int8)."""
    if spec.get("kind") != "llvm":
        return spec
    if spec.get("mcpu") == NATIVE:
        return native_target(spec)
    if any(k in spec for k in ("mcpu", "mattr", "mtriple")):
        return spec
    from tvm.target import codegen

    host = tvm.target.Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()})
    if codegen.target_has_features("avx2", host) and codegen.target_has_features("fma", host):
        return {**spec, "mcpu": PORTABLE_AVX2_CPU}
    return spec


def int8_isa(target: tvm.target.Target) -> str | None:
    """The instruction set of the artifact's packed int8 kernels (None: TVM's default lowering)."""
    from worker.kernels import isa

    chosen = isa.select(target)
    return None if chosen is None else chosen.name


def faster_native_isa(target: tvm.target.Target) -> str | None:
    """What a `native` build would use instead, when this worker's CPU has a faster int8 ISA."""
    from worker.kernels import isa

    native = isa.select(tvm.target.Target(native_target({"kind": "llvm"})))
    return native.name if isa.faster(native, isa.select(target)) else None


def make_target(spec: dict[str, Any]) -> tvm.target.Target:
    """TVM 0.27 takes dict targets; the legacy "llvm -mcpu=x" form is translated by the qconfig.
    LLVM only warns about an unknown CPU and builds generic code: here it is an error."""
    from tvm.target import codegen

    mcpu = spec.get("mcpu")
    if mcpu and not codegen.llvm_is_valid_cpu(str(mcpu), codegen.llvm_get_system_triple()):
        raise QConfigError(
            f"target mcpu {mcpu!r} is not a CPU LLVM knows (e.g. haswell, znver3, skylake-avx512)",
            field="target",
        )
    try:
        return tvm.target.Target(spec)
    except BUILD_FAILURES as exc:  # TVM raises plain errors for unknown keys/values
        raise BuildError(f"invalid target {spec!r}: {_first_line(exc)}", field="target") from None


Pipeline = Literal["tvmq", "tvm"]


@dataclass
class Compiled:
    """An executable and what made it: the module as lowered (which kernels the VM calls, for the
    report and fully_integral) and which pipeline built it."""

    executable: relax.VMExecutable
    lowering: Lowering
    pipeline: Pipeline  # "tvmq": ours (worker/kernels); "tvm": TVM's default, the fallback
    fallback_reason: str | None  # why ours failed, when TVM's built it


def compile_module(mod: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    """Our CPU pipeline (worker.kernels: schedules + packed int8 kernels) for every build.

    If our pipeline fails on a module, TVM's default pipeline builds it instead (slower, same
    results) and a warning says so: a schedule bug must not cost the user the artifact.
    """
    return _compile(mod, target)[0]


def compile_traced(mod: tvm.IRModule, target: tvm.target.Target) -> Compiled:
    """compile_module, keeping the lowered module it built (no second build to inspect it)."""
    recorder = LoweringRecorder()
    current = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(
        opt_level=current.opt_level,
        required_pass=list(current.required_pass),
        disabled_pass=list(current.disabled_pass),
        config=dict(current.config),
        instruments=[*current.instruments, recorder],
    ):
        executable, pipeline, reason = _compile(mod, target)
    return Compiled(executable, recorder.lowering(), pipeline, reason)


def _compile(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[relax.VMExecutable, Pipeline, str | None]:
    from worker.kernels import compile_module as fast_compile

    try:
        return fast_compile(mod, target), "tvmq", None
    except BUILD_FAILURES as exc:
        reason = _last_line(exc)
        warnings.warn(f"tvmq CPU pipeline failed ({reason}); using TVM's default", stacklevel=3)
    try:
        return tvm.compile(mod, target), "tvm", reason
    except BUILD_FAILURES as exc:
        raise BuildError(f"tvm.compile failed for target {target}: {_last_line(exc)}") from exc


#: What fixes a missing or broken link step. gcc alone lacks the C runtime objects (crti.o) that
#: `gcc -shared` links in, hence libc6-dev with it.
TOOLCHAIN_HINT = "install a C toolchain (Debian: apt-get install gcc libc6-dev; scripts/setup does) or set CC"


def _require_linker(path: Path) -> None:
    """export_library links the compiled objects with `$CXX`/`$CC`, else the first of TVM's compiler
    names on PATH (tvm.support.cc.get_cc); without one TVM fails with a bare TypeError."""
    from tvm.support import cc

    found = cc.get_cc()
    if found and shutil.which(found):
        return
    what = f"CC/CXX is {found!r}, not an executable" if found else "no g++, gcc, clang or cc on PATH"
    raise BuildError(
        f"exporting {path.name} needs a C compiler to link it ({what}): {TOOLCHAIN_HINT}", artifact=path.name
    )


def _export_failure(exc: Exception) -> str:
    """TVM's link error ends with the command line; the linker's first line says what is missing."""
    lines = _lines(exc)
    if len(lines) > 1 and lines[0].startswith("Compilation error:"):
        return f"the link step failed: {lines[1]}: {TOOLCHAIN_HINT}"
    return _last_line(exc)


def export(executable: relax.VMExecutable, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _require_linker(path)
    try:
        executable.export_library(str(path))
    except (*BUILD_FAILURES, OSError) as exc:
        raise BuildError(f"exporting {path.name} failed: {_export_failure(exc)}", artifact=path.name) from exc
    return path


def vm_of(executable: relax.VMExecutable) -> relax.VirtualMachine:
    return relax.VirtualMachine(executable, tvm.cpu())


def compile_and_load(mod: tvm.IRModule, target: tvm.target.Target) -> relax.VirtualMachine:
    """Build `mod` like the artifact and load it in this process: the Runner that calibrate and
    verify receive (with the target bound), so the passes never import the builder."""
    return vm_of(compile_module(mod, target))


def load_vm(path: Path) -> relax.VirtualMachine:
    """The artifact contract: load_module + VirtualMachine on the CPU."""
    return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())


def _lines(exc: BaseException) -> list[str]:
    return [line for line in str(exc).splitlines() if line.strip()]


def _first_line(exc: BaseException) -> str:
    return next(iter(_lines(exc)), type(exc).__name__)


def _last_line(exc: BaseException) -> str:
    """The message of a TVM error (its last line, after the C++ backtrace); an exception without a
    message (a bare AssertionError) is named by its type."""
    return (_lines(exc) or [type(exc).__name__])[-1]
