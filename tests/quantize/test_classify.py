"""The classifier on kernel lists as the builder leaves them: a standalone cast the builder added
for an exact-float kernel is part of that kernel's exact lowering; any other float kernel is not."""

from __future__ import annotations

from worker.quantize.classify import OpInfo, classify, mark_exact_feeds


def _kernel(
    var: str,
    inputs: list[str],
    outputs: list[str],
    *,
    relax_ops: list[str] | None = None,
    exact: bool = False,
    integral: bool = False,
    macs: int = 0,
) -> OpInfo:
    return OpInfo(
        var=var,
        name=var,
        relax_op="",
        inputs=inputs,
        outputs=outputs,
        integral=integral or exact,
        exact_float=exact,
        macs=macs,
        relax_ops=relax_ops or [],
    )


def _chain(cast_reader: OpInfo, cast_inputs: list[str]) -> list[tuple[OpInfo, list[str]]]:
    conv = _kernel("conv", ["int8"], ["int8"], relax_ops=["nn.conv2d"], integral=True, macs=9)
    cast = _kernel("cast", cast_inputs, ["float32"])
    return [(conv, []), (cast, ["conv"]), (cast_reader, ["cast"])]


def test_a_builder_cast_feeding_only_exact_float_kernels_is_exact() -> None:
    grouped = _kernel("grouped", ["float32"], ["int32"], relax_ops=["nn.conv2d"], exact=True, macs=9)
    ops = _chain(grouped, ["int8"])
    mark_exact_feeds(ops)
    cast = ops[1][0]
    assert cast.integral and cast.exact_float
    assert [op.group for op in classify(ops)] == ["core", "core", "core"]


def test_a_cast_feeding_a_float_kernel_stays_float() -> None:
    sigmoid = _kernel("sigmoid", ["float32"], ["float32"], relax_ops=["sigmoid"])
    ops = _chain(sigmoid, ["int8"])
    mark_exact_feeds(ops)
    assert not ops[1][0].integral


def test_a_cast_of_int32_is_not_exact_in_float32() -> None:
    grouped = _kernel("grouped", ["float32"], ["int32"], relax_ops=["nn.conv2d"], exact=True, macs=9)
    ops = _chain(grouped, ["int32"])
    mark_exact_feeds(ops)
    assert not ops[1][0].integral


def test_a_source_op_is_never_taken_for_the_builders_cast() -> None:
    grouped = _kernel("grouped", ["float32"], ["int32"], relax_ops=["nn.conv2d"], exact=True, macs=9)
    ops = _chain(grouped, ["int8"])
    ops[1][0].relax_ops = ["astype"]  # the model's own dequantizing cast: float by the partition
    mark_exact_feeds(ops)
    assert not ops[1][0].integral
