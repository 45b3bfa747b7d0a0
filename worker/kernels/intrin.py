"""Dot-product tensor intrinsics for TIR tensorization, generated for any ISA entry (worker/kernels/isa.py).

Every intrinsic computes C[i] += sum_k A[k] * B[i, k] for `lanes` int32 output lanes and
`k_lanes` reduction values per lane, with A's k_lanes values (one 32-bit word) broadcast to all
lanes. The description is the same scalar loop nest for every ISA, so `tensorize` checks each
kernel against one shape; the implementation loads A as one int32, broadcasts it, and hands the
accumulator, the broadcast and one vector of B to the ISA's *call shape*, one of:

- `madd_pairs`: vpmaddubsw (u8 x s8 pairs -> saturating s16) then vpmaddwd against ones (s16
  pairs -> s32), added to the accumulator: exact only while no pair sum saturates;
- `madd_words`: vpmaddwd on int16 operands (exact for any int8 value), added to the accumulator;
- `dot_quads`: vpdpbusd (u8 x s8 quads accumulated straight into s32, exact);
- `fused_multiply_add`: float32, one product per lane (`llvm.fmuladd`, vfmadd), the same shape with
  k_lanes = 1 and a float accumulator.

The LLVM intrinsics are called through `T.call_llvm_pure_intrin` with the operand types of the
wheel's LLVM (22): vpdpbusd takes (<N x i32> acc, <4N x i8> a, <4N x i8> b); LLVM 22 rejects
the older i32-vector operands ("Call parameter type does not match function signature"), which is
why TVM's own `dot_16x4_vnni` does not build with this wheel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.tirx import Expr, PrimFunc

if TYPE_CHECKING:
    from worker.kernels.isa import ISA, DotProduct

#: (LLVM intrinsic names, lanes, accumulator, broadcast A, B) -> the new accumulator vector.
Call = Callable[[tuple[str, ...], int, Expr, Expr, Expr], Expr]


def madd_pairs(llvm: tuple[str, ...], lanes: int, acc: Expr, a: Expr, b: Expr) -> Expr:
    maddubs, maddwd = llvm
    pairs = T.call_llvm_pure_intrin(f"int16x{2 * lanes}", maddubs, a, b)
    ones = T.Broadcast(T.int16(1), 2 * lanes)
    return acc + T.call_llvm_pure_intrin(f"int32x{lanes}", maddwd, pairs, ones)


def madd_words(llvm: tuple[str, ...], lanes: int, acc: Expr, a: Expr, b: Expr) -> Expr:
    (maddwd,) = llvm
    return acc + T.call_llvm_pure_intrin(f"int32x{lanes}", maddwd, a, b)


def dot_quads(llvm: tuple[str, ...], lanes: int, acc: Expr, a: Expr, b: Expr) -> Expr:
    (dpbusd,) = llvm
    return T.call_llvm_pure_intrin(f"int32x{lanes}", dpbusd, acc, a, b)


def fused_multiply_add(llvm: tuple[str, ...], lanes: int, acc: Expr, a: Expr, b: Expr) -> Expr:
    (fmuladd,) = llvm
    return T.call_llvm_pure_intrin(f"float32x{lanes}", fmuladd, a, b, acc)


def _intrinsic(lanes: int, dot: DotProduct, vector: bool) -> PrimFunc:
    """The description (scalar loop nest) or, with `vector`, the implementation: one broadcast of
    A's 32-bit word, one vector load of B, the ISA's call shape."""
    k, data, weight, call, llvm = dot.k_lanes, dot.data_dtype, dot.weight_dtype, dot.call, dot.llvm
    acc = dot.acc_dtype

    @T.prim_func(s_tir=True)
    def func(
        A: T.Buffer((k,), data, offset_factor=1),
        B: T.Buffer((lanes, k), weight, offset_factor=1),
        C: T.Buffer((lanes,), acc, offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:k], B[0:lanes, 0:k])
            T.writes(C[0:lanes])
            if vector:
                if k == 1:
                    broadcast = T.Broadcast(A[0], lanes)
                else:
                    word = T.reinterpret("int32", A.vload([0], f"{data}x{k}"))
                    broadcast = T.reinterpret(f"{data}x{lanes * k}", T.Broadcast(word, lanes))
                C[T.ramp(0, 1, lanes)] = call(
                    llvm,
                    lanes,
                    C.vload([0], f"{acc}x{lanes}"),
                    broadcast,
                    B.vload([0, 0], f"{weight}x{lanes * k}"),
                )
            elif k == 1:  # a unit reduction loop is simplified away in the kernels: none here either
                for i in T.serial(0, lanes):
                    with T.sblock("update"):
                        vi = T.axis.spatial(lanes, i)
                        C[vi] = C[vi] + T.cast(A[0], acc) * T.cast(B[vi, 0], acc)
            else:
                for i in T.serial(0, lanes):
                    for j in T.serial(0, k):
                        with T.sblock("update"):
                            vi, vj = T.axis.remap("SR", [i, j])
                            C[vi] = C[vi] + T.cast(A[vj], acc) * T.cast(B[vi, vj], acc)

    return func


def describe(lanes: int, dot: DotProduct) -> PrimFunc:
    """The scalar loop nest the kernels' inner block must match."""
    return _intrinsic(lanes, dot, vector=False)


def implement(lanes: int, dot: DotProduct) -> PrimFunc:
    return _intrinsic(lanes, dot, vector=True)


def register(isa: ISA, dots: tuple[DotProduct, ...]) -> None:
    """Register the ISA's intrinsics once per process (TensorIntrin.register refuses duplicates)."""
    for dot in dots:
        name = isa.intrinsic(dot)
        if TensorIntrin.get(name, allow_missing=True) is None:
            TensorIntrin.register(name, describe(isa.lanes, dot), implement(isa.lanes, dot))
