"""SAME convs get explicit pads before TVM's import, so no opaque `pad` function sits in the
integer core and the conv's kernel applies the padding itself."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tests.models as models
from tests.quantize.conftest import ACCURATE, cosine, quantize, run_artifact, run_onnx
from worker import converters
from worker.converters import auto_pad


def _same_conv(size: tuple[int, int], kernel: int, stride: int, dilation: int, mode: str) -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((4, 3, kernel, kernel)).astype(np.float32)
    node = helper.make_node(
        "Conv",
        ["x", "w"],
        ["y"],
        auto_pad=mode,
        kernel_shape=[kernel, kernel],
        strides=[stride] * 2,
        dilations=[dilation] * 2,
    )
    graph = helper.make_graph(
        [node],
        "same",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, *size))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "mode"),
    [
        ((16, 15), 2, 1, 1, "SAME_UPPER"),  # even kernel: one pixel at the end only
        ((16, 15), 2, 1, 1, "SAME_LOWER"),
        ((16, 15), 3, 2, 1, "SAME_UPPER"),  # stride 2: uneven on the even side only
        ((16, 15), 3, 2, 1, "SAME_LOWER"),
        ((7, 7), 5, 3, 1, "SAME_LOWER"),
    ],
    ids=str,
)
def test_explicit_pads_compute_what_onnx_runtime_computes(size, kernel, stride, dilation, mode):
    model = _same_conv(size, kernel, stride, dilation, mode)
    rewritten = converters.rewrite(model)
    (conv,) = rewritten.graph.node
    names = {a.name for a in conv.attribute}
    assert "auto_pad" not in names and "pads" in names
    x = np.random.default_rng(1).standard_normal((1, 3, *size)).astype(np.float32)
    np.testing.assert_allclose(
        run_onnx(rewritten, {"x": x})[0], run_onnx(model, {"x": x})[0], rtol=1e-5, atol=1e-5
    )
    assert "auto_pad" in {a.name for a in model.graph.node[0].attribute}, "the caller's model is left alone"


def test_dilation_widens_the_kernel():
    """ONNX Runtime refuses dilated SAME convs, so these are the spec's figures: a 2-tap kernel at
    dilation 3 spans 4 pixels, 3 of padding, the odd one at the end (UPPER) or the beginning."""
    assert auto_pad.same_pads((10,), (2,), (1,), (3,), "SAME_UPPER") == [1, 2]
    assert auto_pad.same_pads((10,), (2,), (1,), (3,), "SAME_LOWER") == [2, 1]
    assert auto_pad.same_pads((9, 10), (3, 3), (1, 1), (2, 2), "SAME_UPPER") == [2, 2, 2, 2]


def test_a_same_conv_in_the_core_is_integral(tmp_path):
    """conv → relu → SAME_UPPER 2x2 conv → relu → conv: fully integral, no `pad` function, the
    output as close to ONNX Runtime's as any other int8 conv chain."""
    model = models.importer_primfuncs()
    calibration = models.random_calibration(model, 8, 0)
    result = quantize(
        tmp_path, model, calibration, calibrate_mode="max", partition_conversions="fully_integral", **ACCURATE
    )
    assert "def pad(" not in result.relax_script.read_text()
    float_core = result.report["integrality"]["float_in_core"]
    assert not [name for name in float_core if "pad" in name and "mirror" not in name], float_core
    x = calibration["x"][:1]
    assert cosine(run_artifact(result.artifact, [x])[0], run_onnx(model, {"x": x})[0]) >= 0.99
