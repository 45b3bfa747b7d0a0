"""The early op check: TVM's importer's ops as TVM-free data, every unsupported op named with its count."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

import tests.models as models
from worker import converters
from worker.errors import UnsupportedOpError
from worker.frontend import SUPPORTED_OPS, check_supported_ops, unsupported_ops
from worker.frontend.importer_ops import IMPORTER_BUILTIN_OPS, IMPORTER_OPS


def test_importer_ops_list_is_tvms():
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    assert set(_get_convert_map()) | IMPORTER_BUILTIN_OPS == IMPORTER_OPS


def test_converted_ops_count_as_supported():
    assert converters.CONVERTED_OPS <= SUPPORTED_OPS
    assert IMPORTER_OPS <= SUPPORTED_OPS


def _unsupported_here_and_in_branches() -> object:
    """A custom op twice, a Loop, and an unknown op inside an If branch (silero-vad keeps its LSTM
    in If branches): the check walks subgraphs like the importer does."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])

    def branch(name: str, op: str) -> object:
        out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
        return helper.make_graph([helper.make_node(op, ["x"], ["b"])], name, [], [out])

    nodes = [
        helper.make_node("Frobnicate", ["x"], ["f"], domain="com.example"),
        helper.make_node("Frobnicate", ["f"], ["g"], domain="com.example"),
        helper.make_node("Loop", ["", "", "g"], ["h"], body=branch("body", "Relu")),
        helper.make_node("Cast", ["h"], ["c"], to=TensorProto.BOOL),
        helper.make_node(
            "If", ["c"], ["y"], then_branch=branch("then", "Unheard"), else_branch=branch("else", "Relu")
        ),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )


def test_every_unsupported_op_is_counted_in_subgraphs_too():
    model = _unsupported_here_and_in_branches()
    assert unsupported_ops(model) == {"Frobnicate": 2, "Loop": 1, "Unheard": 1}
    with pytest.raises(UnsupportedOpError) as err:
        check_supported_ops(model)
    assert err.value.code == "E_UNSUPPORTED_OP"
    assert err.value.detail == {
        "field": "model",
        "op": "Frobnicate",
        "ops": {"Frobnicate": 2, "Loop": 1, "Unheard": 1},
    }
    assert "Frobnicate (2 nodes), Loop (1 node), Unheard (1 node)" in err.value.message


def test_supported_models_pass():
    for model in (models.small_cnn(), models.small_mlp(), models.importer_primfuncs()):
        check_supported_ops(model)
