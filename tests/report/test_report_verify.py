"""verify.integrality keeps each float op's reason as the partition gave it."""

from __future__ import annotations

import onnx
import tvm
from onnx import TensorProto, helper

from worker import frontend
from worker.build import compile_traced
from worker.qconfig import QConfig
from worker.quantize.annotate import annotate
from worker.quantize.calibrate import calibrate
from worker.quantize.classify import artifact_ops, classify
from worker.quantize.graph import Graph, build_graph
from worker.quantize.partition import partition
from worker.quantize.prerequisite import prerequisite_optimize
from worker.quantize.realize import realize
from worker.report import verify


def _never_run(mod: object) -> object:
    raise AssertionError("global_scale calibration runs no module")


def _graph(model: onnx.ModelProto) -> Graph:
    shapes = frontend.fixed_input_shapes(model, None)
    return build_graph(prerequisite_optimize(frontend.import_relax(frontend.simplify(model, shapes), shapes)))


def test_float_ops_carry_the_partitions_reason_not_no_rule() -> None:
    """conv(relu(x), w) with w an input: relu is a follow op outside any region, the conv's rule
    wants a constant weight; both ops have rules, so neither is "no rule"."""
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])],
            "conv_of_an_input_weight",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4, 6, 6)),
                helper.make_tensor_value_info("w", TensorProto.FLOAT, (8, 4, 3, 3)),
            ],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 8, 4, 4))],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    graph = _graph(model)
    qconfig = QConfig(skip_conv_layers=[])
    annotation = annotate(graph, partition(graph, qconfig), qconfig)
    cal = calibrate(graph, annotation, None, qconfig, _never_run)
    qmod, realizer = realize(graph, annotation, cal.thresholds, qconfig)

    kernels = classify(artifact_ops(qmod, compile_traced(qmod, tvm.target.Target({"kind": "llvm"})).lowering))
    reasons = {
        ", ".join(op.relax_ops): op.reason for op in verify.integrality(kernels, realizer.float_reasons).ops
    }
    assert reasons == {
        "nn.relu": "float operands (follow op outside a quantized region)",
        "nn.conv2d": "unsupported: weight is not a constant",
    }
