"""Decomposed layer norms the integer layer norm fits fold into one nn.layer_norm (and are then
quantized by its rule); the others stay as they are, for float_safety to keep float with its reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import tests.models as models
from tests.quantize.conftest import ACCURATE, one_tensor_model, prepared_graph
from worker.qconfig import QConfig
from worker.quantize.partition import partition

SHAPE = (1, 8, 32)


def _model(form: str, axis: int = -1) -> onnx.ModelProto:
    """x → a layer norm over `axis` in one of the forms exporters write → × 2 (so x stays an input)."""
    n = helper.make_node
    nodes = [n("ReduceMean", ["x"], ["m"], axes=[axis]), n("Sub", ["x", "m"], ["d"])]
    if form == "e_x2":  # mean(x²) − mean(x)², magika's (tf2onnx) spelling
        nodes += [
            n("Mul", ["x", "x"], ["xx"]),
            n("ReduceMean", ["xx"], ["mxx"], axes=[axis]),
            n("Mul", ["m", "m"], ["mm"]),
            n("Sub", ["mxx", "mm"], ["v"]),
        ]
    else:
        nodes += [n("Pow", ["d", "two"], ["dd"]), n("ReduceMean", ["dd"], ["v"], axes=[axis])]
    nodes += [n("Add", ["v", "eps"], ["ve"]), n("Sqrt", ["ve"], ["s"])]
    if form == "divide":
        nodes.append(n("Div", ["d", "s"], ["norm"]))
    else:  # 1 / std first, the centred value on either side of the multiply
        factors = ["r", "d"] if form == "reciprocal" else ["d", "r"]
        nodes += [n("Reciprocal", ["s"], ["r"]), n("Mul", factors, ["norm"])]
    nodes.append(n("Mul", ["norm", "two"], ["y"]))
    inits = [
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
    ]
    return one_tensor_model(nodes, inits, SHAPE, 13)


@pytest.mark.parametrize("form", ["divide", "reciprocal", "e_x2"])
def test_trailing_layer_norm_folds_and_is_quantized(form: str) -> None:
    graph = prepared_graph(_model(form))
    ops = [n.op for n in graph.nodes if n.op is not None]
    assert ops == ["nn.layer_norm", "multiply"], ops
    norm = graph.nodes[0]
    assert [int(a) for a in norm.call.attrs.axes] == [2]
    assert float(norm.call.attrs.epsilon) == pytest.approx(1e-5)
    assert norm in partition(graph, QConfig(**ACCURATE)).quantized


def test_norm_over_a_leading_axis_is_not_folded() -> None:
    """Over axis 1 of (1, 8, 32) the integer layer norm does not apply: the chain stays, and the
    partition keeps it float with float_safety's layer norm reason."""
    graph = prepared_graph(_model("divide", axis=1))
    assert "nn.layer_norm" not in {n.op for n in graph.nodes}
    reasons = partition(graph, QConfig(**ACCURATE)).reasons.values()
    assert any(why.startswith("layer norm:") for why in reasons), reasons


def test_magika_channel_norm_stays_float() -> None:
    graph = prepared_graph(models.conv_layer_norm_conv())
    assert "nn.layer_norm" not in {n.op for n in graph.nodes}
