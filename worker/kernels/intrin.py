"""AVX2 int8/int16 dot-product tensor intrinsics for TIR tensorization.

TVM 0.27 ships x86 int8 intrinsics only for VNNI/AVX-512; on AVX2 the int8 dot product is
`vpmaddubsw` (u8 x s8 pairs -> saturating s16) followed by `vpmaddwd` against ones (s16 pairs ->
s32). The s16 saturation makes that exact only when every weight pair has |w0| + |w1| <= 128
(255 * 128 < 32767); `WEIGHT_PAIR_LIMIT` names that bound and the kernel builder checks it on the
constant weights. Otherwise the exact int16 path (`vpmaddwd` on sign-extended operands, same MAC
rate per port) is used.

Both intrinsics compute C[i] += sum_k A[k] * B[i, k] for 8 output lanes, A broadcast to all lanes.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

LANES = 8
U8S8_K = 4  # int8 values per int32 lane
S16_K = 2  # int16 values per int32 lane
WEIGHT_PAIR_LIMIT = 128

U8S8_INTRIN = "tvmq_avx2_dot_8x4_u8s8s32"
S16_INTRIN = "tvmq_avx2_dot_8x2_s16s16s32"


@T.prim_func(s_tir=True)
def _u8s8_desc(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        for i in T.serial(0, 8):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _u8s8_impl(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        a_i32 = T.reinterpret("int32", A.vload([0], "uint8x4"))
        a_u8x32 = T.reinterpret("uint8x32", T.Broadcast(a_i32, 8))
        pairs = T.call_llvm_pure_intrin(
            "int16x16", "llvm.x86.avx2.pmadd.ub.sw", a_u8x32, B.vload([0, 0], "int8x32")
        )
        C[T.ramp(0, 1, 8)] = C[T.ramp(0, 1, 8)] + T.call_llvm_pure_intrin(
            "int32x8", "llvm.x86.avx2.pmadd.wd", pairs, T.Broadcast(T.int16(1), 16)
        )


@T.prim_func(s_tir=True)
def _s16_desc(
    A: T.Buffer((2,), "int16", offset_factor=1),
    B: T.Buffer((8, 2), "int16", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        for i in T.serial(0, 8):
            for k in T.serial(0, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _s16_impl(
    A: T.Buffer((2,), "int16", offset_factor=1),
    B: T.Buffer((8, 2), "int16", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        a_i32 = T.reinterpret("int32", A.vload([0], "int16x2"))
        a_s16x16 = T.reinterpret("int16x16", T.Broadcast(a_i32, 8))
        C[T.ramp(0, 1, 8)] = C[T.ramp(0, 1, 8)] + T.call_llvm_pure_intrin(
            "int32x8", "llvm.x86.avx2.pmadd.wd", a_s16x16, B.vload([0, 0], "int16x16")
        )


def register() -> None:
    """Register both intrinsics once per process (TensorIntrin.register refuses duplicates)."""
    for name, desc, impl in ((U8S8_INTRIN, _u8s8_desc, _u8s8_impl), (S16_INTRIN, _s16_desc, _s16_impl)):
        if TensorIntrin.get(name, allow_missing=True) is None:
            TensorIntrin.register(name, desc, impl)
