"""Shared pieces of the per-ISA kernel tests: the cases, their Relax ops, and the targets to run them.

A case is one int8 conv2d or matmul with constant weights in one of two regimes: 8-bit (the full
int8 range, -128 and 127 included: vpmaddubsw pairs saturate, AVX2 needs its int16 path) or
7-bit (every pair within the vpmaddubsw bound). Inputs mix random values with -128 and 127, so the
+128 shift to uint8 meets both ends.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import TensorIntrin

from tests.kernels import graphs
from worker.build import native_target
from worker.kernels import host, intrin, isa
from worker.kernels.isa import ISA


@dataclass(frozen=True)
class Case:
    op: str  # "conv2d" or "matmul"
    data_shape: tuple[int, ...]
    out: int  # output channels / columns
    kernel: int = 1
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    weight_bits: int = 8

    def __str__(self) -> str:
        shape = "x".join(map(str, self.data_shape))
        conv = f"-k{self.kernel}s{self.stride}p{self.pad}d{self.dilation}" if self.op == "conv2d" else ""
        return f"{self.op}-{shape}-o{self.out}{conv}-w{self.weight_bits}"

    def seed(self) -> int:
        return zlib.crc32(str(self).encode())

    def weights(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed())
        shape = (
            (self.out, self.data_shape[1], self.kernel, self.kernel)
            if self.op == "conv2d"
            else (self.data_shape[-1], self.out)
        )
        if self.weight_bits == 8:
            w = rng.integers(-128, 128, size=shape).astype(np.int8)
            w.flat[:8] = [-128, -128, 127, 127, -128, 127, 127, -128]
        else:
            w = rng.integers(-64, 64, size=shape).astype(np.int8)
            w.flat[:4] = [-64, -64, 63, 63]  # |w0| + |w1| = 128: the vpmaddubsw bound, still exact
        return w

    def data(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed() + 1)
        return graphs.extreme_input("int8", self.data_shape, rng)

    def relax_module(self) -> tvm.IRModule:
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType(self.data_shape, "int8"))
        w = relax.const(self.weights())
        with bb.function("main", [x]):
            if self.op == "conv2d":
                out = bb.emit(
                    relax.op.nn.conv2d(x, w, self.stride, self.pad, self.dilation, out_dtype="int32")
                )
            else:
                out = bb.emit(relax.op.matmul(x, w, out_dtype="int32"))
            bb.emit_func_output(out)
        return bb.get()


CASES = [
    case
    for bits in (8, 7)
    for case in (
        Case("conv2d", (1, 8, 14, 14), 16, 3, 1, 1, weight_bits=bits),
        Case("conv2d", (2, 8, 15, 15), 24, 3, 2, 1, weight_bits=bits),
        Case("conv2d", (1, 3, 17, 17), 16, 7, 2, 3, weight_bits=bits),
        Case("conv2d", (1, 5, 9, 9), 20, 1, weight_bits=bits),
        Case("conv2d", (1, 8, 12, 12), 16, 3, 1, 2, 2, weight_bits=bits),
        Case("matmul", (3, 100), 24, weight_bits=bits),
        Case("matmul", (17, 40), 33, weight_bits=bits),
    )
]


@cache
def tvm_default(case: Case) -> np.ndarray:
    """TVM's own lowering of the case's Relax op on this CPU: the ground truth."""
    return graphs.run(tvm.compile(case.relax_module(), host_target()), case.data())


@cache
def host_target() -> tvm.target.Target:
    """This machine's CPU, with any feature it does not report switched off."""
    return tvm.target.Target(native_target({"kind": "llvm"}))


def missing_on_host(entry: ISA) -> str | None:
    """Why this CPU cannot run the ISA (the Linux flags it lacks), or None when it can."""
    flags = host.cpu_flags()
    if flags is None:
        return "no /proc/cpuinfo flags to check the CPU against"
    gaps = [host.unreported(features, flags) for features in entry.requires]
    if any(not gap for gap in gaps):
        return None
    names = " or ".join("+".join(host.LINUX_FLAGS[f] for f in gap) for gap in gaps)
    return f"this CPU ({host.system_cpu()}) lacks {names}"


def host_target_for(entry: ISA) -> tvm.target.Target:
    """The host target with every faster ISA's features switched off, so `isa.select` picks `entry`."""
    faster = [f for other in isa.TABLE[: isa.TABLE.index(entry)] for fs in other.requires for f in fs]
    own = {f for fs in entry.requires for f in fs}
    spec = native_target({"kind": "llvm"})
    mattr = [*spec.get("mattr", []), *(f"-{f}" for f in dict.fromkeys(faster) if f not in own)]
    return tvm.target.Target({**spec, "mattr": mattr} if mattr else spec)


def emulated(entry: ISA) -> ISA:
    """The same entry (lanes, dtypes, packing, register tile) with each dot product's intrinsic (and
    the float FMA's) implemented by its own scalar description, so its kernels run on any CPU."""
    twin = replace(entry, name=f"{entry.name}_emulated")
    for dot in (*twin.dots, isa.FMA32):
        name = twin.intrinsic(dot)
        if TensorIntrin.get(name, allow_missing=True) is None:
            desc = intrin.describe(twin.lanes, dot)
            TensorIntrin.register(name, desc, desc)
    return twin
