"""A numpy model of the packed int8 kernels, for every ISA of the table.

It uses the kernels' own weight packing (`packed.pack_weights`: layout, dot product choice and
shift correction) and re-implements the rest independently: the shifted, padded NHWC activations,
the indexing of the packed weights, and each instruction's arithmetic as its saturation rule states
it (pair sums clipped to int16 for vpmaddubsw, exact quads for vpdpbusd), in int32. Equal to
TVM's lowering for an ISA, it proves that ISA's packing and indexing on any CPU; equal to the
kernel that runs here (AVX2), it proves the model itself.
"""

from __future__ import annotations

import numpy as np

from worker.kernels import packed
from worker.kernels.isa import ISA, DotProduct


def wrap_int32(values: np.ndarray) -> np.ndarray:
    return ((values.astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)


def dot(a: np.ndarray, w: np.ndarray, rule: DotProduct) -> np.ndarray:
    """a: (..., KG, k_lanes) operands, w: (OB, KG, lanes, k_lanes) -> (..., OB, lanes) sums.

    One instruction per (k group, lane): k_lanes products reduced as the instruction does.
    """
    products = a[..., None, :, None, :].astype(np.int64) * w.astype(np.int64)  # (..., OB, KG, lanes, k)
    if rule.pair_sum_bits is not None:
        bound = 2 ** (rule.pair_sum_bits - 1)
        pairs = products.reshape(*products.shape[:-1], -1, 2).sum(axis=-1)
        products = np.clip(pairs, -bound, bound - 1)
    return products.sum(axis=(-1, -3))


def _operands(values: np.ndarray, rule: DotProduct) -> np.ndarray:
    return values.astype(np.int64) + rule.shift


def conv2d(
    x: np.ndarray,
    weight_oihw: np.ndarray,
    strides: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    isa: ISA,
) -> np.ndarray:
    """int8 NCHW x OIHW -> int32 NCHW, as the packed kernel on `isa` computes it."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight_oihw.shape
    (sh, sw), (ph, pw), (dh, dw) = strides, padding, dilation
    weights, correction, rule = packed.pack_weights(weight_oihw.transpose(0, 2, 3, 1), isa)
    kg = weights.shape[3]
    cp = kg * rule.k_lanes
    nhwc = np.zeros((n, h + 2 * ph, w + 2 * pw, cp), np.int64)
    nhwc[:, ph : ph + h, pw : pw + w, :c] = x.transpose(0, 2, 3, 1)
    prepared = _operands(nhwc, rule)
    oh = (h + 2 * ph - (kh - 1) * dh - 1) // sh + 1
    ow = (w + 2 * pw - (kw - 1) * dw - 1) // sw + 1
    acc = np.zeros((n, oh, ow, weights.shape[0], isa.lanes), np.int64)
    for ry in range(kh):
        for rx in range(kw):
            window = prepared[
                :, ry * dh : ry * dh + sh * (oh - 1) + 1 : sh, rx * dw : rx * dw + sw * (ow - 1) + 1 : sw
            ]
            acc += dot(window.reshape(n, oh, ow, kg, rule.k_lanes), weights[:, ry, rx], rule)
    channels = acc.reshape(n, oh, ow, -1)[..., :o] - correction
    return wrap_int32(channels.transpose(0, 3, 1, 2))


def matmul(a: np.ndarray, weight_kn: np.ndarray, isa: ISA) -> np.ndarray:
    """int8 (M, K) x int8 (K, N) -> int32 (M, N), as the packed kernel on `isa` computes it."""
    m, k = a.shape
    weights, correction, rule = packed.pack_weights(np.ascontiguousarray(weight_kn.T), isa)
    kg = weights.shape[1]
    padded = np.zeros((m, kg * rule.k_lanes), np.int64)
    padded[:, :k] = a
    acc = dot(_operands(padded, rule).reshape(m, kg, rule.k_lanes), weights, rule)
    return wrap_int32(acc.reshape(m, -1)[:, : weight_kn.shape[1]] - correction)
