"""Conv `auto_pad: SAME_*` as explicit `pads`.

TVM's importer turns a SAME conv into a separate TIR `pad` function (for even kernels, whose padding
is asymmetric) in front of an unpadded conv. That call is opaque to the quantizer: it stays float in
the middle of the integer core (dequantize, pad, requantize) and the conv's kernel cannot fold the
padding into its own re-layout. With the input shapes fixed the padding is known, and nn.conv2d
takes four pads, so the conv is written with them and the importer emits one op. Exporters that
write SAME (PaddlePaddle, tf2onnx) are what this serves. Pooling needs nothing: the importer already
resolves its auto_pad.
"""

from __future__ import annotations

import onnx
from onnx import helper

from worker.converters.scope import Dims, all_graphs, graph_shapes

SAME = ("SAME_UPPER", "SAME_LOWER")


def make_pads_explicit(model: onnx.ModelProto, inferred: onnx.ModelProto) -> None:
    """Give `model`'s SAME convs explicit pads, in place (the caller's copy).

    `inferred` is the model with inferred shapes; a conv whose input or kernel size is not static
    there keeps its auto_pad (the importer handles it as before).
    """
    for graph, seen in zip(all_graphs(model.graph), all_graphs(inferred.graph), strict=True):
        shapes = graph_shapes(seen)
        weights = {t.name: tuple(t.dims) for t in graph.initializer}
        for node in graph.node:
            if is_same_conv(node):
                _make_explicit(node, shapes, weights)


def same_pads(
    size: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    mode: str,
) -> list[int]:
    """ONNX's SAME padding, begins then ends: the output is ceil(size / stride) and the odd pixel of
    an uneven total goes to the end (SAME_UPPER) or the beginning (SAME_LOWER)."""
    begins, ends = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    return [*begins, *ends]


def is_same_conv(node: onnx.NodeProto) -> bool:
    return (
        node.op_type == "Conv"
        and node.domain in ("", "ai.onnx")
        and any(a.name == "auto_pad" and a.s.decode() in SAME for a in node.attribute)
    )


def _make_explicit(
    node: onnx.NodeProto, shapes: dict[str, Dims], weights: dict[str, tuple[int, ...]]
) -> None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    data = shapes.get(node.input[0])
    kernel = attrs.get("kernel_shape") or weights.get(node.input[1], ())[2:]
    if data is None or not kernel or not all(isinstance(d, int) and d > 0 for d in data[2:]):
        return
    rank = len(kernel)
    pads = same_pads(
        tuple(data[2:]),
        tuple(kernel),
        tuple(attrs.get("strides", [1] * rank)),
        tuple(attrs.get("dilations", [1] * rank)),
        attrs["auto_pad"].decode(),
    )
    kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute("pads", pads)])
