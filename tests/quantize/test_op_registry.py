"""One place per op: a rule registered once (here a dummy rule for Relax's `negative`, which the
registry does not have) is seen by partition, annotate, realize, MAC counting and the qconfig."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from math import prod

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper
from tvm.relax import op as R

import worker.qconfig as qconfig_module
import worker.quantize.ops as ops
from worker import frontend
from worker.build import compile_and_load, compile_traced
from worker.errors import QConfigError
from worker.qconfig import QConfig, parse_qconfig
from worker.quantize.annotate import annotate
from worker.quantize.calibrate import calibrate
from worker.quantize.classify import artifact_ops
from worker.quantize.conversions import split_conversions
from worker.quantize.graph import Graph, Node, build_graph
from worker.quantize.ops.base import OpRule, RealizeContext
from worker.quantize.partition import partition
from worker.quantize.prerequisite import prerequisite_optimize
from worker.quantize.qtensor import QTensor
from worker.quantize.realize import realize

SHAPE = (1, 3, 4, 4)
TARGET = tvm.target.Target({"kind": "llvm"})
RUN = partial(compile_and_load, target=TARGET)


def _negate(ctx: RealizeContext, node: Node) -> QTensor:
    q = ctx.em.cast(ctx.as_input(node.call.args[0]), "int32")
    return q.with_expr(ctx.em.emit(R.negative(q.expr)))


def _model() -> onnx.ModelProto:
    """x -> Neg -> Relu: the dummy rule opens a region and relu (a follow op) joins it."""
    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Relu", ["n"], ["y"])],
        "neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _graph() -> Graph:
    model = _model()
    shapes = frontend.fixed_input_shapes(model, None)
    return build_graph(prerequisite_optimize(frontend.import_relax(frontend.simplify(model, shapes), shapes)))


@pytest.fixture
def register_dummy(monkeypatch: pytest.MonkeyPatch) -> Callable[..., OpRule]:
    """Registers a `negative` rule through ops.register, undone after the test."""
    monkeypatch.setattr(ops, "RULES", dict(ops.RULES))
    monkeypatch.setattr(qconfig_module, "_ACCEPTED_OPS", set(qconfig_module._ACCEPTED_OPS))

    def register(**fields: object) -> OpRule:
        return ops.register(
            OpRule("negative", "compute", _negate, macs=lambda call, shape: prod(shape), **fields)
        )

    return register


def test_a_registered_op_is_seen_by_every_pass(register_dummy: Callable[..., OpRule]) -> None:
    with pytest.raises(QConfigError):
        parse_qconfig({"exclude_ops": ["negative"]})
    graph = _graph()
    neg = next(n for n in graph.nodes if n.op == "negative")
    assert partition(graph, QConfig()).reasons[neg] == "no rule"

    register_dummy()
    qconfig = QConfig(calibrate_mode="global_scale")  # no data: every threshold is global_scale
    parts = partition(graph, qconfig)
    assert neg in parts.quantized and neg not in parts.reasons
    annotation = annotate(graph, parts, qconfig)
    assert annotation.kinds[graph.params[0]] == "input"  # the dummy op's operand gets a threshold
    cal = calibrate(graph, annotation, None, qconfig, RUN)
    qmod, realizer = realize(graph, annotation, cal.thresholds, qconfig)
    assert neg in realizer.layers and not realizer.float_reasons

    final = split_conversions(qmod)  # as the pipeline builds it: the input conversion not fused in
    compiled = compile_traced(final, TARGET)
    (op,) = [op for op, _ in artifact_ops(final, compiled.lowering) if op.relax_op == "negative"]
    assert op.integral and op.inputs == ["int8"] and op.macs == prod(SHAPE)  # the cast is fused in
    x = np.random.default_rng(0).uniform(-4, 4, SHAPE).astype(np.float32)
    got = RUN(qmod)["main"](tvm.runtime.tensor(x)).numpy()
    step = qconfig.global_scale / 127
    np.testing.assert_allclose(got, np.maximum(-x, 0), atol=step)

    excluded = parse_qconfig({"exclude_ops": ["negative"]})
    assert partition(graph, excluded).reasons[neg] == "excluded by qconfig"


def test_keep_float_keeps_the_call_float_with_its_reason(register_dummy: Callable[..., OpRule]) -> None:
    register_dummy(keep_float=lambda graph, node: "a difference of nearly equal tensors")
    graph = _graph()
    parts = partition(graph, QConfig())
    (neg,) = [n for n in graph.nodes if n.op == "negative"]
    assert neg not in parts.quantized
    assert parts.reasons[neg] == "not int8-safe: a difference of nearly equal tensors"
