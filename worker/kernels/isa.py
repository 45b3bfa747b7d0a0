"""The instruction sets the packed int8 kernels are built on: one entry each, chosen from the target.

An entry holds everything the kernel builder needs: the vector width (int32 output lanes), the
accumulator tiles the register file holds, and its dot products, fastest first. A dot product names
its operand dtypes, the reduction values per 32-bit lane, the LLVM intrinsics and the call shape
that invokes them from TIR (worker/kernels/intrin.py), and its saturation rule: vpmaddubsw
saturates each sum of two u8 x s8 products to int16, so it is exact only for weights whose pairs
satisfy |w0| + |w1| <= 32767 // 255 = 128 (7-bit weights always do); the int16 vpmaddwd path is
exact for any int8 weight; vpdpbusd accumulates four u8 x s8 products straight into int32 and
needs no slow path. The last dot product of an entry must be exact for every int8 weight.

Float32 convolutions and matmuls use the same packed layout and register tile with one product per
lane (`FMA32`: broadcast activation x weight vector, `vfmadd`), at the entry's vector width: 256-bit
on AVX2, 512-bit on the AVX-512 entries.

`select(target)` takes the first entry of `TABLE` whose required LLVM features the target has.
Adding an ISA is one entry here, plus a call shape in intrin.py if none of the existing fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm.target import codegen

from worker.kernels import intrin

#: The largest u8 activation (int8 + 128): the factor in the vpmaddubsw saturation bound.
U8_MAX = 255


@dataclass(frozen=True)
class DotProduct:
    """One way the ISA multiplies and reduces `k_lanes` values into each int32 lane."""

    name: str
    data_dtype: str
    weight_dtype: str
    k_lanes: int
    llvm: tuple[str, ...]
    call: intrin.Call
    #: Saturation rule: sums of two products saturate to this many bits (None: exact in int32).
    pair_sum_bits: int | None = None

    @property
    def acc_dtype(self) -> str:
        return "float32" if self.data_dtype == "float32" else "int32"

    @property
    def shift(self) -> int:
        """uint8 operands hold int8 activations + 128 (undone by a per-channel correction)."""
        return 128 if self.data_dtype == "uint8" else 0

    @property
    def pair_limit(self) -> int | None:
        """Largest |w0| + |w1| of a weight pair for which no pair sum saturates."""
        return None if self.pair_sum_bits is None else (2 ** (self.pair_sum_bits - 1) - 1) // U8_MAX

    def exact_for(self, packed: np.ndarray) -> bool:
        """Weights packed with k_lanes innermost: every adjacent pair within the bound."""
        limit = self.pair_limit
        if limit is None:
            return True
        pairs = np.abs(packed.astype(np.int32)).reshape(-1, 2).sum(axis=1)
        return int(pairs.max(initial=0)) <= limit


@dataclass(frozen=True)
class ISA:
    """One instruction set: its registers and its dot products, fastest first."""

    name: str
    vector_bits: int
    registers: int
    #: Accumulator registers of the register tile (what is left for the broadcast and temporaries).
    accumulators: int
    #: LLVM target features: the ISA is there when the target has every feature of one of these sets.
    requires: tuple[tuple[str, ...], ...]
    dots: tuple[DotProduct, ...]

    @property
    def lanes(self) -> int:
        return self.vector_bits // 32

    def intrinsic(self, dot: DotProduct) -> str:
        """The TensorIntrin name of one dot product on this ISA."""
        return f"tvmq_{self.name}_dot_{self.lanes}x{dot.k_lanes}_{dot.name}"

    def available(self, target: tvm.target.Target) -> bool:
        return target.kind.name == "llvm" and any(
            all(codegen.target_has_features(f, target) for f in features) for features in self.requires
        )

    def float_available(self, target: tvm.target.Target) -> bool:
        """The float32 kernels need FMA besides the entry's own features."""
        return self.available(target) and codegen.target_has_features("fma", target)


_U8S8 = {"name": "u8s8", "data_dtype": "uint8", "weight_dtype": "int8", "k_lanes": 4}
_S16 = {"name": "s16", "data_dtype": "int16", "weight_dtype": "int16", "k_lanes": 2}


def _pairs_then_int16(maddubs: str, maddwd: str) -> tuple[DotProduct, ...]:
    """vpmaddubsw + vpmaddwd (saturating pairs, exact for 7-bit weights), else int16 vpmaddwd."""
    return (
        DotProduct(**_U8S8, llvm=(maddubs, maddwd), call=intrin.madd_pairs, pair_sum_bits=16),
        DotProduct(**_S16, llvm=(maddwd,), call=intrin.madd_words),
    )


def _quads(dpbusd: str) -> tuple[DotProduct, ...]:
    """vpdpbusd: exact for every int8 weight, no slow path."""
    return (DotProduct(**_U8S8, llvm=(dpbusd,), call=intrin.dot_quads),)


#: float32: one product per lane, fused multiply-add (vfmadd) at the ISA's vector width.
FMA32 = DotProduct(
    name="f32",
    data_dtype="float32",
    weight_dtype="float32",
    k_lanes=1,
    llvm=("llvm.fmuladd",),
    call=intrin.fused_multiply_add,
)

AVX2 = ISA(
    "avx2",
    vector_bits=256,
    registers=16,
    accumulators=12,
    requires=(("avx2",),),
    dots=_pairs_then_int16("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
)
AVX512BW = ISA(
    "avx512bw",
    vector_bits=512,
    registers=32,
    accumulators=24,
    requires=(("avx512bw",),),
    dots=_pairs_then_int16("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512"),
)
AVX_VNNI = ISA(
    "avxvnni",
    vector_bits=256,
    registers=16,
    accumulators=12,
    requires=(("avxvnni",), ("avx512vnni", "avx512vl")),
    dots=_quads("llvm.x86.avx512.vpdpbusd.256"),
)
AVX512_VNNI = ISA(
    "avx512vnni",
    vector_bits=512,
    registers=32,
    accumulators=24,
    requires=(("avx512vnni",),),
    dots=_quads("llvm.x86.avx512.vpdpbusd.512"),
)

#: Fastest first: exact 512-bit quads, exact 256-bit quads, saturating 512-bit pairs, AVX2.
TABLE: tuple[ISA, ...] = (AVX512_VNNI, AVX_VNNI, AVX512BW, AVX2)


def select(target: tvm.target.Target) -> ISA | None:
    """The fastest ISA the target has, or None (then int8 ops keep TVM's default lowering)."""
    return next((isa for isa in TABLE if isa.available(target)), None)


def faster(a: ISA | None, b: ISA | None) -> bool:
    """Whether `a` comes before `b` in TABLE (any ISA is faster than none)."""
    if a is None:
        return False
    return b is None or TABLE.index(a) < TABLE.index(b)
