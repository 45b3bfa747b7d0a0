"""Quantized tensors and the integer arithmetic that moves them between scales.

A `QTensor` is an integer Relax expression `q` with a real-valued meaning `q * scale`; `scale` is a
scalar (per-tensor) or an array shaped to broadcast against the tensor (per-channel: 1 everywhere but
the channel axis). Zero points are always 0 (symmetric, as Relay). Every scale change between
integer tensors (requantize) is integer-only: a rounding right shift when the ratio of scales is a
power of two, an int64 fixed-point multiply + shift otherwise — no float in between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.relax import op as R

#: (min, max) representable with symmetric quantization for each (dtype, nbit).
INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}


def qmax(nbit: int) -> int:
    """Largest magnitude on the symmetric grid; -2**(nbit-1) is never produced (Relay's range)."""
    return 2 ** (nbit - 1) - 1


def scale_for(threshold: float | np.ndarray, nbit: int) -> np.ndarray:
    """Relay's convention: the threshold maps to 2**(nbit-1), so power-of-two thresholds give
    power-of-two scales (which is what lets requantize be a pure shift)."""
    return np.asarray(threshold, dtype=np.float64) / float(2 ** (nbit - 1))


@dataclass(frozen=True, eq=False)
class QTensor:
    expr: relax.Expr
    dtype: str
    scale: np.ndarray  # float64, shape () or broadcastable with ndim == tensor ndim

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    def with_expr(
        self, expr: relax.Expr, dtype: str | None = None, scale: np.ndarray | None = None
    ) -> QTensor:
        return QTensor(expr, dtype or self.dtype, self.scale if scale is None else scale)


def _is_power_of_two(ratio: np.ndarray) -> tuple[bool, np.ndarray]:
    exps = np.log2(ratio)
    rounded = np.round(exps)
    return bool(np.all(np.abs(exps - rounded) < 1e-9)), rounded.astype(np.int64)


def fixed_point(ratio: np.ndarray, bits: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """ratio ≈ M * 2**-n with M in [2**(bits-1), 2**bits). With 31 bits an int32 value times M fits
    int64; tiny ratios get n capped at 62 (their products round to 0 or ±1 anyway)."""
    ratio = np.asarray(ratio, dtype=np.float64)
    exponent = np.floor(np.log2(ratio)).astype(np.int64)
    shift = (bits - 1) - exponent
    mult = np.round(ratio * np.exp2(shift.astype(np.float64))).astype(np.int64)
    carry = mult >= 2**bits
    mult = np.where(carry, mult // 2, mult)
    shift = np.where(carry, shift - 1, shift)
    over = np.maximum(shift - 62, 0)
    return np.maximum(mult >> over, 0), shift - over


#: int32 requantize: operands are pre-shifted to at most 16 bits and multiplied by a 14-bit M, so
#: the product and its rounding term stay below 2**31 (AVX2 has no 64-bit vector multiply).
_NARROW_OPERAND_BITS = 16
_NARROW_MULT_BITS = 14


class Emitter:
    """Emits the integer (and boundary float) arithmetic into a BlockBuilder."""

    def __init__(self, bb: relax.BlockBuilder, rounding: str = "UPWARD", round_for_shift: bool = True):
        self.bb = bb
        self.rounding = rounding
        self.round_for_shift = round_for_shift

    # -- constants -------------------------------------------------------------------------------
    @staticmethod
    def const(value: np.ndarray | float | int, dtype: str) -> relax.Expr:
        return relax.const(np.asarray(value).astype(dtype), dtype)

    def emit(self, expr: relax.Expr) -> relax.Expr:
        return self.bb.emit(expr)

    # -- boundaries (float <-> int): these are the only float ops a quantized region adds ---------
    def quantize(self, x: relax.Expr, scale: np.ndarray, nbit: int, dtype: str = "int8") -> QTensor:
        limit = qmax(nbit)
        inv = self.const(1.0 / scale, "float32")
        rounded = R.round(R.multiply(x, inv))
        q = self.emit(R.astype(R.clip(rounded, -limit, limit), dtype))
        return QTensor(q, dtype, np.asarray(scale, dtype=np.float64))

    def dequantize(self, q: QTensor) -> relax.Expr:
        return self.emit(R.multiply(R.astype(q.expr, "float32"), self.const(q.scale, "float32")))

    # -- integer only ---------------------------------------------------------------------------
    def cast(self, q: QTensor, dtype: str) -> QTensor:
        """Widening cast (value unchanged)."""
        if q.dtype == dtype:
            return q
        return q.with_expr(self.emit(R.astype(q.expr, dtype)), dtype=dtype)

    def _clip_cast(self, x: relax.Expr, from_dtype: str, dtype: str, nbit: int) -> relax.Expr:
        limit = qmax(nbit)
        if INT_BITS[from_dtype] > nbit or nbit < INT_BITS[dtype]:
            x = R.clip(x, -limit, limit)
        return self.emit(R.astype(x, dtype) if from_dtype != dtype else x)

    def _rounding_term(self, x: relax.Expr, shift: np.ndarray, dtype: str) -> relax.Expr:
        """x + 2**(n-1) (round half up); TONEAREST subtracts 1 for negative x: ties away from 0."""
        half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
        out = R.add(x, self.const(half, dtype))
        if self.rounding == "TONEAREST":
            out = R.subtract(out, R.astype(R.less(x, self.const(0, dtype)), dtype))
        return out

    def requantize(
        self, q: QTensor, scale: np.ndarray | float, dtype: str, nbit: int | None = None
    ) -> QTensor:
        """q (any int dtype, per-tensor or per-channel) -> `dtype` at scalar `scale`."""
        nbit = nbit or INT_BITS[dtype]
        out_scale = np.asarray(scale, dtype=np.float64)
        ratio = q.scale / out_scale
        pow2, exps = _is_power_of_two(ratio)
        if pow2 and np.all(exps == 0):
            return QTensor(self._clip_cast(q.expr, q.dtype, dtype, nbit), dtype, out_scale)
        if pow2 and np.all(exps < 0):
            shift = -exps
            x = q.expr if q.dtype == "int32" else R.astype(q.expr, "int32")
            if self.round_for_shift:
                x = self._rounding_term(x, shift, "int32")
            y = R.right_shift(x, self.const(shift, "int32"))
            return QTensor(self._clip_cast(y, "int32", dtype, nbit), dtype, out_scale)
        if pow2 and np.all(exps >= 0):
            y = R.left_shift(R.astype(q.expr, "int64"), self.const(exps, "int64"))
            return QTensor(self._clip_cast(y, "int64", dtype, nbit), dtype, out_scale)
        if nbit <= 16 and np.all(ratio < 1) and q.dtype in ("int8", "int16", "int32"):
            return QTensor(self._requantize_int32(q, ratio, dtype, nbit), dtype, out_scale)
        mult, shift = fixed_point(ratio)
        prod = R.multiply(R.astype(q.expr, "int64"), self.const(mult, "int64"))
        y = R.right_shift(self._rounding_term(prod, shift, "int64"), self.const(shift, "int64"))
        return QTensor(self._clip_cast(y, "int64", dtype, nbit), dtype, out_scale)

    def _bound(self, x: relax.Expr, limit: np.ndarray) -> relax.Expr:
        if limit.size == 1:
            return R.clip(x, -int(limit), int(limit))
        return R.minimum(R.maximum(x, self.const(-limit, "int32")), self.const(limit, "int32"))

    def _requantize_int32(self, q: QTensor, ratio: np.ndarray, dtype: str, nbit: int) -> relax.Expr:
        """Fixed-point requantize in int32 for narrow outputs (ratio < 1).

        Inputs beyond (qmax + 1) / ratio saturate anyway, so they are clipped first; what is left is
        shifted right (with rounding) to 16 bits, multiplied by a 14-bit M and shifted by n. The
        result is within 1 of exact rounding and differs from it only within 2**-6 of a tie.
        """
        limit = qmax(nbit)
        bound = np.minimum(np.floor((limit + 1) / ratio), 2**31 - 1).astype(np.int64)
        pre = np.maximum(np.ceil(np.log2(bound + 1)).astype(np.int64) - _NARROW_OPERAND_BITS, 0)
        mult, shift = fixed_point(ratio * np.exp2(pre.astype(np.float64)), bits=_NARROW_MULT_BITS)
        x = q.expr if q.dtype == "int32" else R.astype(q.expr, "int32")
        x = self._bound(x, bound)
        if np.any(pre > 0):
            x = R.right_shift(self._rounding_term(x, pre, "int32"), self.const(pre, "int32"))
        prod = R.multiply(x, self.const(mult, "int32"))
        y = R.right_shift(self._rounding_term(prod, shift, "int32"), self.const(shift, "int32"))
        return self._clip_cast(y, "int32", dtype, nbit)

    def unify(self, qs: list[QTensor], dtype: str, nbit: int | None = None) -> list[QTensor]:
        """Bring tensors to one per-tensor scale (the coarsest: no value can overflow) and dtype."""
        common = max(float(np.max(q.scale)) for q in qs)
        out = []
        for q in qs:
            if not q.per_channel and float(q.scale) == common:
                out.append(
                    self.cast(q, dtype)
                    if INT_BITS[dtype] >= INT_BITS[q.dtype]
                    else self.requantize(q, common, dtype, nbit)
                )
            else:
                out.append(self.requantize(q, common, dtype, nbit))
        return out

    def per_tensor(self, q: QTensor) -> QTensor:
        """Layout ops move axes: collapse a per-channel scale first (coarsest channel scale)."""
        return self.unify([q], q.dtype)[0] if q.per_channel else q
