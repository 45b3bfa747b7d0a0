"""The CPU this worker runs on: LLVM's name for it, and the instruction sets its kernel reports.

LLVM names the host CPU from its model number (`codegen.llvm_get_system_cpu()`; `mcpu: native`
itself falls back to generic in this wheel), and a CPU name implies a feature set. A virtual
machine can report one CPU model and hide features of it, or expose more than the name implies
(seen: a Xeon guest that LLVM calls `rocketlake`, with AVX-VNNI and AMX that rocketlake lacks).
What may actually run here is what Linux reports in /proc/cpuinfo; it decides which ISA tests run
and which features a `native` build must switch off.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

#: LLVM feature name -> /proc/cpuinfo flag, for every feature an ISA entry (worker/kernels/isa.py)
#: requires, plus the AVX-512 foundation and FMA that LLVM's own vectorizer uses with them.
LINUX_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni",
    "avxvnni": "avx_vnni",
}

CPUINFO = Path("/proc/cpuinfo")


def system_cpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The first processor's flags, or None where the file or its x86 `flags` line is absent."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def unreported(features: Iterable[str], flags: frozenset[str] | None) -> list[str]:
    """The LLVM features among `features` that the host's flags do not report (none if unknown)."""
    if flags is None:
        return []
    return [f for f in features if f in LINUX_FLAGS and LINUX_FLAGS[f] not in flags]
