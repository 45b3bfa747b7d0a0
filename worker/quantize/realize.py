"""Realize: rebuild `main` with every quantized op in integer arithmetic.

One walk over the graph in order. Float ops are re-emitted with float operands (a quantized
producer is dequantized once, at the boundary); quantized ops are rewritten by their rule, which
asks this pass for operands as QInput (int8 at the calibrated scale), as-is integers, or QWeights.
The same walk, with nothing quantized, builds the calibration probe; with `simulate=True` it
builds Relay's simulated module (float ops on fake-quantized operands, for do_simulation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax

from worker.errors import InternalError
from worker.qconfig import QConfig
from worker.quantize.annotate import Annotation, operands
from worker.quantize.calibration import weight_threshold
from worker.quantize.graph import Graph, Node, const_value, tuple_fields, with_functions_of
from worker.quantize.ops import rule_for
from worker.quantize.ops.base import TableInfo, Value
from worker.quantize.qtensor import Emitter, QTensor, qmax, scale_for


def quantize_weight(w: np.ndarray, qconfig: QConfig, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(integer levels as float64, scale shaped to broadcast against `w`: 1s except along the
    per-channel axis) of a weight under the qconfig's weight_scale, per_channel and nbit_weight."""
    axis = axis if qconfig.per_channel else None
    scale = scale_for(weight_threshold(w, qconfig.weight_scale, axis), qconfig.nbit_weight)
    if axis is None:
        scale = scale.reshape(())
    else:
        shape = [1] * w.ndim
        shape[axis] = w.shape[axis]
        scale = scale.reshape(shape)
    limit = qmax(qconfig.nbit_weight)
    return np.clip(np.round(w / scale), -limit, limit), scale


class Realizer:
    """Implements the RealizeContext that op rules use (see ops/base.py)."""

    def __init__(
        self,
        graph: Graph,
        qconfig: QConfig,
        quantized: set[Node] | frozenset[Node] = frozenset(),
        thresholds: dict[relax.Expr, float] | None = None,
        simulate: bool = False,
        reasons: dict[Node, str] | None = None,
    ) -> None:
        self.graph = graph
        self.qconfig = qconfig
        self.quantized = quantized
        self.thresholds = thresholds or {}
        self.simulate = simulate
        self.bb = relax.BlockBuilder()
        self.em = Emitter(self.bb, qconfig.rounding, qconfig.round_for_shift)
        self.env: dict[relax.Expr, Value] = {}
        self._inputs: dict[relax.Expr, QTensor] = {}
        self._floats: dict[QTensor, relax.Expr] = {}
        #: quantized tensor of every realized op's output, for per-layer comparisons
        self.layers: dict[Node, QTensor] = {}
        self._reasons = reasons or {}
        #: realized var name -> why that float op stayed float (for the report and fully_integral)
        self.float_reasons: dict[str, str] = {}
        #: (name, scale, method) of every quantized weight, for the calibration report
        self.weight_log: list[tuple[str, np.ndarray, str]] = []
        #: non-linear ops realized in integers (lookup tables, integer softmax / layer norm)
        self.tables: dict[Node, TableInfo] = {}

    # -- RealizeContext ---------------------------------------------------------------------------
    def value(self, expr: relax.Expr) -> Value:
        if isinstance(expr, relax.Tuple):
            return [self.value(f) for f in expr.fields]
        return self.env.get(expr, expr)

    def threshold(self, expr: relax.Expr) -> float:
        try:
            return float(self.thresholds[expr])
        except KeyError:
            raise InternalError(f"no calibrated threshold for tensor {expr}") from None

    def as_input(self, expr: relax.Expr) -> QTensor:
        if expr in self._inputs:
            return self._inputs[expr]
        nbit = self.qconfig.nbit_input
        value = self.value(expr)
        if isinstance(value, QTensor) and value.dtype == "int8" and not value.per_channel:
            q = value
        elif isinstance(value, QTensor):
            q = self.em.requantize(value, scale_for(self.threshold(expr), nbit), "int8", nbit)
        else:
            q = self.em.quantize(self.float_value(value), scale_for(self.threshold(expr), nbit), nbit)
        self._inputs[expr] = q
        return q

    def integer_tensor(self, expr: relax.Expr) -> QTensor | None:
        """The integer tensor the quantized module holds for the float tensor `expr` (the operand
        its integer ops read, else the op's own quantized output), for per-layer comparisons."""
        if expr in self._inputs:
            return self._inputs[expr]
        node = self.graph.producer(expr)
        return None if node is None else self.layers.get(node)

    def as_quantized(self, expr: relax.Expr) -> QTensor:
        value = self.value(expr)
        return value if isinstance(value, QTensor) else self.as_input(expr)

    def as_weight(self, expr: relax.Expr, axis: int | None) -> QTensor:
        w = const_value(expr).astype(np.float64)
        q, scale = quantize_weight(w, self.qconfig, axis)
        self.weight_log.append(
            (f"weight{len(self.weight_log)}{list(w.shape)}", scale, self.qconfig.weight_scale)
        )
        return QTensor(self.em.const(q, "int8"), "int8", scale)

    def activation(self, q: QTensor, node: Node) -> QTensor:
        nbit = self.qconfig.nbit_activation
        if nbit >= 32:
            return q
        return self.em.requantize(
            q, scale_for(self.threshold(node.var), nbit), self.qconfig.dtype_activation, nbit
        )

    def tuple_fields(self, expr: relax.Expr) -> list[relax.Expr]:
        fields = tuple_fields(self.graph, expr)
        if fields is None:
            raise InternalError(f"expected a tuple operand, got {expr}")
        return fields

    # -- float side -------------------------------------------------------------------------------
    def float_value(self, value: Value) -> relax.Expr:
        if isinstance(value, QTensor):  # dequantized once, however many float consumers
            if value not in self._floats:
                self._floats[value] = self.em.dequantize(value)
            return self._floats[value]
        if isinstance(value, list):
            return relax.Tuple([self.float_value(v) for v in value])
        return value

    def _float_call(self, node: Node, args: Sequence[relax.Expr]) -> relax.Expr:
        call = node.call
        return self.bb.emit(relax.Call(call.op, list(args), call.attrs, call.ty_args))

    def _fake_quant(self, node: Node) -> relax.Expr:
        """do_simulation: the float op on quantize-dequantized operands and weights."""
        weights = rule_for(node.op).weights(node)
        quantized_operands = set(operands(self.graph, node))
        args = []
        for i, arg in enumerate(node.call.args):
            if i in weights:
                w = self.as_weight(arg, weights[i])
                arg = self.em.const(const_value(w.expr).astype(np.float64) * w.scale, "float32")
            args.append(self._fake_operand(arg, quantized_operands))
        return self._float_call(node, args)

    def _fake_operand(self, arg: relax.Expr, quantized_operands: set[relax.Expr]) -> relax.Expr:
        if isinstance(arg, relax.Tuple):
            return relax.Tuple([self._fake_operand(f, quantized_operands) for f in arg.fields])
        if arg in quantized_operands:
            return self.em.dequantize(self.as_input(arg))
        return self.float_value(self.value(arg))

    # -- the walk ---------------------------------------------------------------------------------
    def visit(self, node: Node) -> Value:
        value = node.value
        if node.op is None:
            if isinstance(value, relax.TupleGetItem):
                inner = self.value(value.tuple_value)
                if isinstance(inner, list):
                    return inner[value.index]
                return self.bb.emit(relax.TupleGetItem(self.float_value(inner), value.index))
            if isinstance(value, relax.Tuple):
                return [self.value(f) for f in value.fields]
            if isinstance(value, relax.Var):
                return self.value(value)
            if isinstance(value, relax.Call):  # call_tir and other non-op calls
                return self.bb.emit(
                    relax.Call(
                        value.op,
                        [self.float_value(self.value(a)) for a in value.args],
                        value.attrs,
                        value.ty_args,
                    )
                )
            return self.bb.emit(value)
        if node in self.quantized:
            if self.simulate:
                out = self._fake_quant(node)
                self.float_reasons[out.name] = "simulation"
                return out
            out = rule_for(node.op).realize(self, node)
            if isinstance(out, QTensor):
                self.layers[node] = out
            return out
        out = self._float_call(node, [self.float_value(self.value(a)) for a in node.call.args])
        if node in self._reasons:
            self.float_reasons[out.name] = self._reasons[node]
        return out

    def build(
        self,
        outputs: Sequence[relax.Expr] | None = None,
        *,
        name: str = "main",
        extra_params: Sequence[relax.Var] = (),
    ) -> tvm.IRModule:
        """The rewritten module; `outputs` replaces main's result (probes, per-layer debugging).
        `name` and `extra_params` serve modules that take more than the model's inputs (the
        search's parameterized simulation)."""
        with self.bb.function(name, [*self.graph.params, *extra_params]):
            with self.bb.dataflow():
                for node in self.graph.nodes:
                    self.env[node.var] = self.visit(node)
                gv = self.bb.emit_output(self.result(outputs))
            self.bb.emit_func_output(gv)
        return with_functions_of(self.bb.get(), self.graph.module)

    def result(self, outputs: Sequence[relax.Expr] | None) -> relax.Expr:
        """What the function returns, once every node is visited."""
        if outputs is None:
            return self.float_value(self.value(self.graph.output))
        return relax.Tuple([self.float_value(self.value(o)) for o in outputs])

    def layer_module(self, outputs: Sequence[relax.Expr]) -> tvm.IRModule:
        """The same quantized module returning the dequantized values of `outputs` (per-layer
        accuracy); a fresh walk, since a Realizer emits one module."""
        return Realizer(self.graph, self.qconfig, self.quantized, self.thresholds).build(outputs)


def realize(
    graph: Graph, annotation: Annotation, thresholds: dict[relax.Expr, float], qconfig: QConfig
) -> tuple[tvm.IRModule, Realizer]:
    realizer = Realizer(
        graph,
        qconfig,
        annotation.partition.quantized,
        thresholds,
        simulate=qconfig.do_simulation,
        reasons=annotation.partition.reasons,
    )
    return realizer.build(), realizer


def probe_module(graph: Graph, qconfig: QConfig, outputs: Sequence[relax.Expr]) -> tvm.IRModule:
    """The float model returning the given intermediate tensors (for calibration and accuracy)."""
    return Realizer(graph, qconfig).build(outputs)
