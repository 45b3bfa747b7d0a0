"""What an op rule is, and what a rule may ask of the realize pass.

Each quantizable Relax op has exactly one `OpRule` (registered in its family module): how the
partition treats it (`role`, `layer`, `accepts`, `keep_float`), which operands need calibrated
thresholds, which are weights, how it is rewritten into integer ops (`realize`) and how much work it
is (`macs`) — Relay's register_annotate_function and register_realize_function in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from tvm import relax

from worker.qconfig import QConfig
from worker.quantize.graph import Graph, Node
from worker.quantize.qtensor import Emitter, QTensor

#: A value during realize: a float Relax expression, a quantized tensor, or a tuple of either.
Value = relax.Expr | QTensor | list


@dataclass(frozen=True)
class TableInfo:
    """How a non-linear op was computed in integers, for the report: a lookup table (with its
    largest error against the float function over the input levels on its output grid, and how
    many levels the calibrated output range clips) or an integer algorithm."""

    function: str
    form: str
    input_scale: float
    output_scale: float
    max_abs_error: float | None = None
    clipped_levels: int | None = None


class RealizeContext(Protocol):
    """The services the realize pass offers to op rules."""

    em: Emitter
    qconfig: QConfig
    #: non-linear ops realized in integers (tables, integer softmax / layer norm), for the report
    tables: dict[Node, TableInfo]

    def value(self, expr: relax.Expr) -> Value: ...

    def as_input(self, expr: relax.Expr) -> QTensor:
        """`expr` as an int8 tensor at its calibrated scale (QInput): quantize or requantize."""

    def as_quantized(self, expr: relax.Expr) -> QTensor:
        """`expr` as it is if already integer, else quantized like an input."""

    def as_weight(self, expr: relax.Expr, axis: int | None) -> QTensor:
        """A constant quantized to int8 (per-channel along `axis` when the qconfig asks for it)."""

    def threshold(self, expr: relax.Expr) -> float: ...

    def activation(self, q: QTensor, node: Node) -> QTensor:
        """Relay's QActivation: requantize to nbit_activation unless it is 32 (keep int32)."""


Role = Literal["compute", "follow"]
#: The layers the qconfig names: conv layers (skip_conv_layers, by index) and dense (skip_dense_layer).
LayerKind = Literal["conv", "dense"]


def skipped_layer(kind: LayerKind, index: int, qconfig: QConfig) -> bool:
    """Whether the qconfig keeps the `index`-th layer of this kind (graph order, from 0) float."""
    return index in qconfig.skip_conv_layers if kind == "conv" else qconfig.skip_dense_layer


@dataclass(frozen=True)
class OpRule:
    """One op's quantization rule.

    role: "compute" ops start a quantized region (their operands get quantized); "follow" ops are
    quantized only when an operand already is (Relay quantizes add/relu/pool only inside regions).
    accepts: returns why this particular call cannot be quantized (attributes, layout), or None.
    keep_float: returns why quantizing this call would lose its signal although the rule could
    realize it (a pattern int8 cannot carry, such as the difference of two nearly equal tensors),
    or None; it sees the whole graph.
    layer: the LayerKind for the qconfig's skip_conv_layers / skip_dense_layer, else None.
    weights: operand index -> per-channel axis (None: per-tensor) of constant operands quantized
    as weights; used by realize and by the simulated (fake-quantized) module.
    activation_output: the output is a QActivation edge when nbit_activation < 32 (requantized to
    that width, so calibration finds its threshold).
    lut: the float function (of the node and an input array) a 256-entry int8 table implements;
    the qconfig's lut_activations switches these rules off. A table's output is calibrated: a
    one-sided input (a detection head's sigmoid on mostly negative logits) reaches only a corner
    of the table's range.
    macs: multiply-accumulates of one call (its Relax call and output shape) for the report;
    None for ops whose cost is not counted.
    float_safety: given the calibrated |x| range of a tensor (a constant's is its max |value|), why
    this call would lose its precision in integers, or None; asked after calibration (its output
    is then calibrated too), and the partition keeps the op float with that reason.
    """

    op: str
    role: Role
    realize: Callable[[RealizeContext, Node], Value]
    accepts: Callable[[Node], str | None] = lambda node: None
    keep_float: Callable[[Graph, Node], str | None] = lambda graph, node: None
    layer: Callable[[Node], LayerKind | None] = lambda node: None
    weights: Callable[[Node], dict[int, int | None]] = lambda node: {}
    activation_output: bool = False
    lut: Callable[[Node, np.ndarray], np.ndarray] | None = None
    macs: Callable[[relax.Call, tuple[int, ...]], int] | None = None
    float_safety: Callable[[Node, Callable[[relax.Expr], float]], str | None] | None = None

    def output_threshold(self, qconfig: QConfig) -> bool:
        """Whether the output is a QActivation edge that calibration must find a threshold for."""
        return (
            self.lut is not None
            or self.float_safety is not None  # asked with the output's calibrated range
            or (self.activation_output and qconfig.nbit_activation < 32)
        )


def fit_scale(scale: np.ndarray, ndim: int) -> np.ndarray:
    """Left-pad a scale's shape with 1s so it broadcasts against an ndim-D tensor like Relax does."""
    scale = np.asarray(scale, dtype=np.float64)
    if scale.size == 1:
        return scale.reshape(())
    return scale.reshape((1,) * (ndim - scale.ndim) + scale.shape)


def channel_scale(scale: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A per-channel vector as a broadcastable array with the channels on `axis`."""
    scale = np.asarray(scale, dtype=np.float64)
    if scale.size == 1:
        return scale.reshape(())
    shape = [1] * ndim
    shape[axis] = scale.size
    return scale.reshape(shape)
