"""What a converter can know about a graph before it replaces a node, and how it adds nodes.

A converter needs three facts the node itself does not carry: which of its inputs are constants
(weights are often computed from constants, e.g. PyTorch's gate reordering `Slice → Concat →
Unsqueeze`), which dims are static (an unrolled loop needs its trip count), and which outputs are
read at all. `Scope` answers them for one graph, seeing through to the graphs around it, as ONNX
name resolution does. `Writer` adds the replacement nodes with fresh readable names, in the form of
each op that the model's opset accepts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Ops whose output is never a function of their inputs alone: never folded into a constant.
_IMPURE_OPS = frozenset(
    {"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
)

Dims = tuple[int | None, ...]


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from all_graphs(sub)


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def model_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor name the model defines or reads, in any graph: new names must avoid them all."""
    names: set[str] = set()
    for graph in all_graphs(model.graph):
        names.update(t.name for t in graph.initializer)
        names.update(vi.name for vi in [*graph.input, *graph.output, *graph.value_info])
        for node in graph.node:
            names.update(node.input)
            names.update(node.output)
    names.discard("")
    return names


def read_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor name some node or graph output reads, in any graph."""
    names: set[str] = set()
    for graph in all_graphs(model.graph):
        names.update(vi.name for vi in graph.output)
        for node in graph.node:
            names.update(node.input)
    names.discard("")
    return names


def _dims(vi: onnx.ValueInfoProto) -> Dims | None:
    tensor_type = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)


@dataclass
class Scope:
    """One graph as a converter sees it: its own names first, then the enclosing graphs'.

    `shapes` come from a shape-inferred copy of the model (the graph itself is not changed).
    """

    graph: onnx.GraphProto
    shapes: dict[str, Dims]
    opset: int
    outer: Scope | None = None
    _producers: dict[str, onnx.NodeProto] = field(init=False)
    _initializers: dict[str, onnx.TensorProto] = field(init=False)
    _constants: dict[str, np.ndarray | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._producers = {out: node for node in self.graph.node for out in node.output if out}
        self._initializers = {t.name: t for t in self.graph.initializer}

    def child(self, graph: onnx.GraphProto, shapes: dict[str, Dims]) -> Scope:
        return Scope(graph, shapes, self.opset, outer=self)

    def _local(self, name: str) -> bool:
        return name in self._producers or name in self._initializers or name in self.shapes

    def constant(self, name: str) -> np.ndarray | None:
        """The value of `name` when it is known before running the model, else None."""
        if not self._local(name):
            return self.outer.constant(name) if self.outer else None
        if name not in self._constants:
            self._constants[name] = None  # a cycle cannot be a constant
            self._constants[name] = self._evaluate(name)
        return self._constants[name]

    def _evaluate(self, name: str) -> np.ndarray | None:
        if name in self._initializers:
            return numpy_helper.to_array(self._initializers[name])
        node = self._producers.get(name)
        if node is None or node.domain not in ("", "ai.onnx") or node.op_type in _IMPURE_OPS:
            return None
        if next(subgraphs(node), None) is not None:
            return None
        feeds = {}
        for i in node.input:
            if i:
                value = self.constant(i)
                if value is None:
                    return None
                feeds[i] = value
        return _run(node, feeds, self.opset)[[o for o in node.output if o].index(name)]

    def dim(self, name: str, axis: int) -> int | None:
        """Dim `axis` of `name` when it is static, else None.

        Besides inferred shapes, a dim that an Unsqueeze inserts is 1 whatever its input's rank:
        this is how exporters turn a single-step cell (PyTorch's LSTMCell) into a sequence of one,
        often after an If that leaves the rank unknown to shape inference.
        """
        dims = self._shape(name)
        if dims is not None and -len(dims) <= axis < len(dims) and dims[axis] is not None:
            return dims[axis]
        node = self._producer(name)
        if node is not None and node.op_type == "Unsqueeze" and axis >= 0:
            axes = _attribute(node, "axes")
            if axes is None and len(node.input) > 1:
                found = self.constant(node.input[1])
                axes = None if found is None else found.tolist()
            if axes is not None and axis in axes:
                return 1
        return None

    def _shape(self, name: str) -> Dims | None:
        if name in self.shapes:
            return self.shapes[name]
        return self.outer._shape(name) if self.outer else None

    def _producer(self, name: str) -> onnx.NodeProto | None:
        if name in self._producers:
            return self._producers[name]
        return self.outer._producer(name) if self.outer else None


def graph_shapes(graph: onnx.GraphProto) -> dict[str, Dims]:
    found = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        dims = _dims(vi)
        if dims is not None:
            found[vi.name] = dims
    return found


def _attribute(node: onnx.NodeProto, name: str):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None


def _run(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int) -> list[np.ndarray]:
    """One node on constants, by onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    graph = helper.make_graph(
        [node],
        "constant",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in feeds.items()
        ],
        [helper.make_empty_tensor_value_info(o) for o in node.output if o],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


class Writer:
    """Appends replacement nodes and their constants to one graph, under fresh readable names.

    Ops whose operands moved from attributes to inputs across opsets (Split, Unsqueeze at 13,
    Clip at 11) are written in the form the model's opset defines.
    """

    def __init__(self, graph: onnx.GraphProto, opset: int, taken: set[str]) -> None:
        self.graph = graph
        self.opset = opset
        self.taken = taken
        self.nodes: list[onnx.NodeProto] = []
        self.constants: set[str] = set()  # every initializer written
        self._consts: dict[tuple, str] = {}

    def fresh(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self.taken:
            k += 1
            candidate = f"{name}_{k}"
        self.taken.add(candidate)
        return candidate

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer (shared between identical uses) holding `value`."""
        value = np.ascontiguousarray(value)
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in self._consts:
            self._consts[key] = self.fresh(name)
            self.constants.add(self._consts[key])
            self.graph.initializer.append(numpy_helper.from_array(value, self._consts[key]))
        return self._consts[key]

    def ints(self, values: Sequence[int]) -> str:
        values = np.asarray(list(values), dtype=np.int64)
        return self.const("ints_" + "_".join(map(str, values.tolist()))[:48], values)

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attrs) -> str:
        return self.multi(op_type, inputs, [name], **attrs)[0]

    def multi(self, op_type: str, inputs: Sequence[str], names: Sequence[str], **attrs) -> list[str]:
        outputs = [self.fresh(n) for n in names]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=outputs[0], **attrs))
        return outputs

    def split(self, x: str, sizes: Sequence[int], axis: int, names: Sequence[str]) -> list[str]:
        if len(sizes) == 1:
            return [x]
        if self.opset < 13:
            return self.multi("Split", [x], names, axis=axis, split=list(sizes))
        return self.multi("Split", [x, self.ints(sizes)], names, axis=axis)

    def unsqueeze(self, x: str, axes: Sequence[int], name: str) -> str:
        if self.opset < 13:
            return self.op("Unsqueeze", [x], name, axes=list(axes))
        return self.op("Unsqueeze", [x, self.ints(axes)], name)

    def clip(self, x: str, bound: float, dtype: np.dtype, name: str) -> str:
        if self.opset < 11:
            return self.op("Clip", [x], name, min=-bound, max=bound)
        lo = self.const("clip_min", np.asarray(-bound, dtype=dtype))
        hi = self.const("clip_max", np.asarray(bound, dtype=dtype))
        return self.op("Clip", [x, lo, hi], name)

    def take(self) -> list[onnx.NodeProto]:
        """The nodes written since the last call."""
        nodes, self.nodes = self.nodes, []
        return nodes

    def concat(self, parts: Sequence[str], axis: int, name: str) -> str:
        return parts[0] if len(parts) == 1 else self.op("Concat", parts, name, axis=axis)
