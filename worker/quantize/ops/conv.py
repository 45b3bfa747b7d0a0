"""conv1d, conv2d (incl. grouped/depthwise) and conv2d_transpose: int8 x int8 -> int32."""

from __future__ import annotations

from collections.abc import Callable
from math import prod

from tvm import relax
from tvm.relax import op as R

from worker.quantize.graph import Node, is_const, shape_of
from worker.quantize.ops import register
from worker.quantize.ops.base import OpRule, RealizeContext, channel_scale
from worker.quantize.qtensor import QTensor


def _accepts(layout: str, kernel_layout: str):
    def accepts(node: Node) -> str | None:
        attrs = node.call.attrs
        if str(attrs.data_layout) != layout or str(attrs.kernel_layout) != kernel_layout:
            return f"layout {attrs.data_layout}/{attrs.kernel_layout} (only {layout}/{kernel_layout})"
        if not is_const(node.call.args[1]):
            return "weight is not a constant"
        return None

    return accepts


def _transpose_axis(node: Node) -> int | None:
    # IOHW with groups: output channel o of group g is weight[g*I/G + i, o]; a per-channel scale
    # along axis 1 is only the output channel's when there is one group.
    return 1 if int(node.call.attrs.groups) == 1 else None


def _realize(
    emit: Callable[..., relax.Expr],
    data_layout: str,
    kernel_layout: str,
    axis: Callable[[Node], int | None],
    extra_attrs: tuple[str, ...] = (),
):
    """int8 data x int8 weight -> int32 accumulator at scale s_data * s_weight (per output channel)."""

    def realize(ctx: RealizeContext, node: Node) -> QTensor:
        attrs = node.call.attrs
        data = ctx.as_input(node.call.args[0])
        weight = ctx.as_weight(node.call.args[1], axis=axis(node))
        out = ctx.em.emit(
            emit(
                data.expr,
                weight.expr,
                strides=attrs.strides,
                padding=attrs.padding,
                dilation=attrs.dilation,
                groups=int(attrs.groups),
                data_layout=data_layout,
                kernel_layout=kernel_layout,
                out_dtype="int32",
                **{name: getattr(attrs, name) for name in extra_attrs},
            )
        )
        return QTensor(out, "int32", data.scale * channel_scale(weight.scale, len(data_layout), 1))

    return realize


def _conv_macs(call: relax.Call, out_shape: tuple[int, ...]) -> int:
    """Every output element sums in_channels/groups x the kernel's taps products (O, I, taps... weight)."""
    return prod(out_shape) * prod(shape_of(call.args[1])[1:])


def _conv2d_transpose_macs(call: relax.Call, out_shape: tuple[int, ...]) -> int:
    """Every input element meets out_channels/groups x KH x KW weights (IOHW weight)."""
    return prod(shape_of(call.args[0])) * prod(shape_of(call.args[1])[1:])


_conv2d_transpose = _realize(R.nn.conv2d_transpose, "NCHW", "IOHW", _transpose_axis, ("output_padding",))


for _name, _emit, _layouts in (
    ("nn.conv1d", R.nn.conv1d, ("NCW", "OIW")),
    ("nn.conv2d", R.nn.conv2d, ("NCHW", "OIHW")),
):
    register(
        OpRule(
            _name,
            "compute",
            _realize(_emit, *_layouts, lambda node: 0),
            accepts=_accepts(*_layouts),
            layer=lambda node: "conv",
            weights=lambda node: {1: 0},
            macs=_conv_macs,
        )
    )
register(
    OpRule(
        "nn.conv2d_transpose",
        "compute",
        _conv2d_transpose,
        accepts=_accepts("NCHW", "IOHW"),
        layer=lambda node: "conv",
        weights=lambda node: {1: _transpose_axis(node)},
        macs=_conv2d_transpose_macs,
    )
)
