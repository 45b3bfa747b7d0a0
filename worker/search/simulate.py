"""The search's simulation: one build that scores every trial, and every layer's sensitivity.

Building a quantized model takes minutes on a real network (measured on the ddddocr recognizer:
94 s for the integer module, 153 s for Relay's simulated one), so a trial must not be a build. The
module built here takes, besides the model's inputs, a gate per quantizable node, a scale per
calibrated tensor and every weight as inputs:

- `main` is the model with each quantizable node run as its float op on fake-quantized operands
  (x + g·(clip(round(x/s))·s − x): g = 1 quantizes, g = 0 is the float model exactly). A trial is
  a gate vector (the nodes its partition quantizes), a scale vector (its thresholds) and a list of
  weights (fake-quantized or float).
- `sensitivity` is the float model that also computes every layer alone on fake-quantized copies
  of its float operands and weights, and returns each layer's signal and noise power: every
  layer's SQNR in one run per feed.

Only the real module's rounding points are simulated: operands of compute ops and lookup tables,
requantized activations and table outputs, and the operands a follow op quantizes because their
producer is float. Integer adds, relu, pooling and data movement are exact in the real module and
are float here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R
from tvm.relax.utils import copy_with_new_vars

from worker.qconfig import QConfig
from worker.quantize.annotate import Annotation, operands
from worker.quantize.calibrate import Runner, point_bits
from worker.quantize.graph import Graph, Node, const_value, shape_of, tuple_fields
from worker.quantize.ops import rule_for
from worker.quantize.qtensor import qmax, scale_for
from worker.quantize.realize import Realizer, quantize_weight


def _as_list(out: object) -> list[np.ndarray]:
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def opens_quantization(node: Node) -> bool:
    """A node that rounds its float operands to int8 (a conv, a dense, a lookup table): the layers
    the search ranks and may keep float. Follow ops go with their operands."""
    rule = rule_for(node.op)
    return rule is not None and (rule.role == "compute" or rule.lut is not None)


@dataclass(frozen=True)
class WeightSlot:
    node: Node
    arg: int
    axis: int | None


class Layout:
    """The order of the module's extra inputs: gates per node, scales per point, weight slots."""

    def __init__(self, graph: Graph, annotation: Annotation, qconfig: QConfig) -> None:
        self.graph = graph
        self.nodes: list[Node] = [n for n in graph.nodes if n in annotation.partition.quantized]
        self.node_index = {n: i for i, n in enumerate(self.nodes)}
        self.points: list[relax.Expr] = list(annotation.points)
        self.point_index = {p: i for i, p in enumerate(self.points)}
        self.kinds = annotation.kinds
        self.bits = point_bits(annotation, qconfig)
        self.slots = [
            WeightSlot(n, i, axis)
            for n in self.nodes
            for i, axis in sorted(rule_for(n.op).weights(n).items())
        ]
        self.layers = [n for n in self.nodes if opens_quantization(n)]
        self.gates = relax.Var("search_gates", relax.TensorType([max(len(self.nodes), 1)], "float32"))
        self.scales = relax.Var("search_scales", relax.TensorType([max(len(self.points), 1)], "float32"))
        self.weight_vars = [
            relax.Var(f"search_w{k}", relax.TensorType(list(shape_of(s.node.call.args[s.arg])), "float32"))
            for k, s in enumerate(self.slots)
        ]
        self.slot_index = {(s.node, s.arg): k for k, s in enumerate(self.slots)}

    @property
    def params(self) -> list[relax.Var]:
        return [self.gates, self.scales, *self.weight_vars]


class _Common(Realizer):
    """What both functions emit: a scalar from the gate/scale vectors, a gated fake-quantization."""

    layout: Layout

    def _take(self, vector: relax.Var, index: int) -> relax.Expr:
        return self.bb.emit(R.take(vector, relax.const(index, "int64"), axis=0, mode="clip"))

    def gate(self, node: Node) -> relax.Expr:
        return self._take(self.layout.gates, self.layout.node_index[node])

    def fake(self, x: relax.Expr, point: relax.Expr, gate: relax.Expr | None) -> relax.Expr:
        """x + gate·(clip(round(x/s), ±qmax)·s − x); gate None: always quantized."""
        bits = self.layout.bits[point]
        s = self._take(self.layout.scales, self.layout.point_index[point])
        q = R.multiply(R.clip(R.round(R.divide(x, s)), -qmax(bits), qmax(bits)), s)
        if gate is None:
            return self.bb.emit(q)
        return self.bb.emit(R.add(x, R.multiply(gate, R.subtract(q, x))))

    def fake_fixed(self, x: relax.Expr, threshold: float, bits: int, gate: relax.Expr | None) -> relax.Expr:
        """A lookup table's output on its fixed range (sigmoid, tanh: 1)."""
        s = float(scale_for(threshold, bits))
        q = R.multiply(
            R.clip(R.round(R.multiply(x, relax.const(1.0 / s, "float32"))), -qmax(bits), qmax(bits)),
            relax.const(s, "float32"),
        )
        if gate is None:
            return self.bb.emit(q)
        return self.bb.emit(R.add(x, R.multiply(gate, R.subtract(q, x))))

    def fake_node(self, node: Node, operand_gate: relax.Expr | None, gate: relax.Expr | None) -> relax.Expr:
        """The node's float op on fake-quantized operands, its weights from the weight inputs, and
        its output rounded where the real module rounds it."""
        rule = rule_for(node.op)
        weights = rule.weights(node)
        quantized = set(operands(self.graph, node))
        args = []
        for i, arg in enumerate(node.call.args):
            if i in weights:
                args.append(self.layout.weight_vars[self.layout.slot_index[node, i]])
            else:
                args.append(self._operand(arg, quantized, node, operand_gate))
        out = self._float_call(node, args)
        if self.layout.kinds.get(node.var) == "activation":
            return self.fake(out, node.var, gate)
        if rule.lut is not None and rule.output_range is not None:
            return self.fake_fixed(out, rule.output_range, self.qconfig.nbit_input, gate)
        return out

    def _operand(
        self, arg: relax.Expr, quantized: set[relax.Expr], node: Node, gate: relax.Expr | None
    ) -> relax.Expr:
        if isinstance(arg, relax.Tuple):
            return relax.Tuple([self._operand(f, quantized, node, gate) for f in arg.fields])
        fields = None if arg in quantized else tuple_fields(self.graph, arg)
        if fields is not None and any(f in quantized for f in fields):
            return relax.Tuple([self._operand(f, quantized, node, gate) for f in fields])
        value = self.float_value(self.value(arg))
        if arg not in quantized or arg not in self.layout.point_index:
            return value
        return self.fake(value, arg, self.operand_gate(arg, node, gate))

    def operand_gate(self, arg: relax.Expr, node: Node, gate: relax.Expr | None) -> relax.Expr | None:
        return gate


class _Main(_Common):
    """`main`: every node of the layout gated by its own entry of the gate vector."""

    def __init__(self, graph: Graph, qconfig: QConfig, layout: Layout) -> None:
        super().__init__(graph, qconfig, set(layout.nodes), simulate=True)
        self.layout = layout

    def _fake_quant(self, node: Node) -> relax.Expr:
        gate = self.gate(node)
        return self.fake_node(node, gate, gate)

    def operand_gate(self, arg: relax.Expr, node: Node, gate: relax.Expr | None) -> relax.Expr | None:
        """A compute op rounds every operand; a follow op only those from a float producer (an
        integer producer's value passes through exactly): gate · (1 − producer's gate)."""
        if opens_quantization(node):
            return gate
        producer = _op_producer(self.graph, arg)
        if producer is None or producer not in self.layout.node_index:
            return gate
        return self.bb.emit(R.multiply(gate, R.subtract(relax.const(1.0, "float32"), self.gate(producer))))


class _Sensitivity(_Common):
    """`sensitivity`: the float model; beside every layer, that layer alone on fake-quantized copies
    of its float operands, and the signal and noise power of its output."""

    def __init__(self, graph: Graph, qconfig: QConfig, layout: Layout) -> None:
        super().__init__(graph, qconfig)
        self.layout = layout
        self.layers = set(layout.layers)
        self.powers: list[relax.Expr] = []

    def visit(self, node: Node) -> object:
        out = super().visit(node)
        if node in self.layers:
            shadow = self.fake_node(node, None, None)
            noise = R.subtract(shadow, out)
            self.powers.append(self.bb.emit(R.reshape(R.sum(R.multiply(out, out)), [1])))
            self.powers.append(self.bb.emit(R.reshape(R.sum(R.multiply(noise, noise)), [1])))
        return out

    def result(self, outputs: Sequence[relax.Expr] | None) -> relax.Expr:
        if not self.powers:
            return relax.const(np.zeros(2, np.float32))
        return R.concat(self.powers, axis=0)


def _op_producer(graph: Graph, expr: relax.Expr) -> Node | None:
    """The op node whose value `expr` is, looking through aliases and tuple items."""
    node = graph.producer(expr)
    while node is not None and node.op is None:
        value = node.value
        if isinstance(value, relax.TupleGetItem):
            node = graph.producer(value.tuple_value)
        elif isinstance(value, relax.Var):
            node = graph.producer(value)
        else:
            return None
    return node


class Simulation:
    """The compiled module and what a trial feeds it."""

    def __init__(self, graph: Graph, annotation: Annotation, qconfig: QConfig, run: Runner) -> None:
        self.graph = graph
        self.layout = Layout(graph, annotation, qconfig)
        mod = _Main(graph, qconfig, self.layout).build(extra_params=self.layout.params)
        sens = _Sensitivity(graph, qconfig, self.layout).build(
            name="sensitivity", extra_params=self.layout.params
        )
        # its own parameter vars: a var bound in two functions fails the well-formed check
        mod["sensitivity"] = copy_with_new_vars(sens["sensitivity"])
        self.vm = run(mod)
        self._float_weights = [
            const_value(s.node.call.args[s.arg]).astype(np.float32) for s in self.layout.slots
        ]
        self._fake_weights: dict[tuple[bool, int, str], list[np.ndarray]] = {}

    def fake_weights(self, qconfig: QConfig) -> list[np.ndarray]:
        key = (qconfig.per_channel, qconfig.nbit_weight, qconfig.weight_scale)
        if key not in self._fake_weights:
            out = []
            for slot, w in zip(self.layout.slots, self._float_weights, strict=True):
                q, scale = quantize_weight(w.astype(np.float64), qconfig, slot.axis)
                out.append((q * scale).astype(np.float32))
            self._fake_weights[key] = out
        return self._fake_weights[key]

    def params(
        self, quantized: set[Node], thresholds: dict[relax.Expr, float], qconfig: QConfig
    ) -> list[tvm.runtime.Tensor]:
        """The extra inputs of one trial: its quantized nodes, its thresholds, its weights."""
        layout = self.layout
        gates = np.zeros(max(len(layout.nodes), 1), np.float32)
        for node in quantized:
            if node in layout.node_index:
                gates[layout.node_index[node]] = 1.0
        scales = np.ones(max(len(layout.points), 1), np.float32)
        for p, i in layout.point_index.items():
            scales[i] = float(scale_for(max(thresholds[p], 1e-30), layout.bits[p]))
        fake = self.fake_weights(qconfig)
        weights = [
            fake[k] if slot.node in quantized else self._float_weights[k]
            for k, slot in enumerate(layout.slots)
        ]
        return [tvm.runtime.tensor(a) for a in (gates, scales, *weights)]

    def run(self, inputs: list[np.ndarray], params: list[tvm.runtime.Tensor]) -> list[np.ndarray]:
        return _as_list(self.vm["main"](*[tvm.runtime.tensor(x) for x in inputs], *params))

    def powers(self, inputs: list[np.ndarray], params: list[tvm.runtime.Tensor]) -> np.ndarray:
        """(signal, noise) power of every layer of the layout (rows in `layout.layers` order)."""
        out = self.vm["sensitivity"](*[tvm.runtime.tensor(x) for x in inputs], *params).numpy()
        return out.astype(np.float64).reshape(-1, 2)[: len(self.layout.layers)]
