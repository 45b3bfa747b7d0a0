"""Fixtures for the report tests.

RENDERING FIXTURE: `sample_report` is made-up but realistic content for a small CNN (a skipped first
conv, one float op left in the core, a dense kept in float). It exists to test the schema and the
page, not the pipeline: none of its numbers were measured.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from worker.report.schema import (
    Accuracy,
    Calibration,
    Integrality,
    KernelTime,
    Latency,
    LayerAccuracy,
    ModelInfo,
    OpRecord,
    OutputAccuracy,
    Performance,
    Provenance,
    Report,
    Summary,
    TensorCalibration,
    TensorSpec,
)


def _ops(with_core_float: bool) -> list[OpRecord]:
    ops = [
        OpRecord(
            name="fused_conv2d_add_relu",
            relax_op="nn.conv2d",
            relax_ops=["nn.conv2d", "add", "nn.relu"],
            group="float_fallback",
            inputs=["float32", "float32", "float32"],
            outputs=["float32"],
            integral=False,
            macs=3 * 16 * 9 * 32 * 32,
            reason="skipped layer",
        ),
        OpRecord(
            name="fused_multiply_round_clip_cast",
            function="quantize_inputs",
            relax_op="quantize",
            relax_ops=["multiply", "round", "clip", "astype"],
            group="prefix",
            inputs=["float32"],
            outputs=["int8"],
            integral=False,
            macs=0,
            reason="conversion: quantizes the model's float input",
        ),
    ]
    for i in range(1, 6):
        ops.append(
            OpRecord(
                name=f"fused_conv2d{i}_add{i}_right_shift{i}_clip{i}_cast{i}",
                function="quantized_main",
                relax_op="nn.conv2d",
                relax_ops=["nn.conv2d", "add", "right_shift", "clip", "astype"],
                group="core",
                inputs=["int8", "int8", "int32"],
                outputs=["int8"],
                integral=True,
                macs=16 * 32 * 9 * 16 * 16,
            )
        )
        if i == 3 and with_core_float:
            ops.append(
                OpRecord(
                    name="fused_dequantize_sigmoid_quantize",
                    function="quantized_main",
                    relax_op="sigmoid",
                    relax_ops=["astype", "multiply", "sigmoid", "multiply", "round", "clip", "astype"],
                    group="core",
                    inputs=["int8"],
                    outputs=["int8", "float32"],
                    integral=False,
                    macs=0,
                    reason="no rule",
                )
            )
    ops += [
        OpRecord(
            name="max_pool2d",
            function="quantized_main",
            relax_op="nn.max_pool2d",
            relax_ops=["nn.max_pool2d"],
            group="core",
            inputs=["int8"],
            outputs=["int8"],
            integral=True,
            macs=0,
        ),
        OpRecord(
            name="fused_cast_multiply",
            function="dequantize_outputs",
            relax_op="dequantize",
            relax_ops=["astype", "multiply"],
            group="suffix",
            inputs=["int8", "float32"],
            outputs=["float32"],
            integral=False,
            macs=0,
            reason="conversion: dequantizes the integer result",
        ),
        OpRecord(
            name="fused_matmul_add",
            function="dequantize_outputs",
            relax_op="matmul",
            relax_ops=["matmul", "add"],
            group="float_fallback",
            inputs=["float32", "float32"],
            outputs=["float32"],
            integral=False,
            macs=512 * 10,
            reason="excluded by qconfig",
        ),
    ]
    return ops


def build_sample_report(
    *, with_core_float: bool = True, hostile_name: str | None = None, slower: bool = False
) -> dict[str, Any]:
    """`slower`: ONNX Runtime fp32 beats the int8 build, so the report says where the time goes."""
    ops = _ops(with_core_float)
    if hostile_name is not None:
        ops[2] = ops[2].model_copy(update={"name": hostile_name})
    integrality = Integrality.from_ops(ops)
    core = [op for op in ops if op.group == "core"]
    layer_sqnr = [38.4, 31.2, 14.8, 27.5, 24.1, 33.0, 21.7]
    layers = [
        LayerAccuracy(name=op.name, op=op.relax_op, sqnr_db=s, cosine=1 - 10 ** (-s / 10))
        for op, s in zip(core, layer_sqnr, strict=False)
    ]
    accuracy = Accuracy(
        samples=40,
        held_out=True,
        outputs=[
            OutputAccuracy(
                name="logits",
                cosine=0.99871,
                sqnr_db=25.9,
                max_abs_error=0.412,
                mean_abs_error=0.0381,
                top1_agreement=0.95,
            ),
            OutputAccuracy(
                name="embedding",
                cosine=0.99702,
                sqnr_db=22.3,
                max_abs_error=0.0871,
                mean_abs_error=0.0102,
            ),
        ],
        layers=layers,
    )
    ort_ms = 2.60 if slower else 3.90
    performance = Performance(
        runs=20,
        threads=1,
        float=Latency(median_ms=4.81, p90_ms=5.02),
        quantized=Latency(median_ms=3.12, p90_ms=3.40),
        onnxruntime=Latency(median_ms=ort_ms, p90_ms=ort_ms * 1.1),
        baseline="onnxruntime_fp32",
        speedup=ort_ms / 3.12,
        speedup_vs_float=4.81 / 3.12,
        hotspots=[
            KernelTime(name=op.name, relax_op=op.relax_op, calls=1, ms=ms, share=ms / 3.0)
            for op, ms in zip([o for o in ops if o.macs][:5], [0.9, 0.6, 0.5, 0.4, 0.3], strict=True)
        ]
        if slower
        else [],
        artifact_bytes=412_344,
        float_artifact_bytes=498_120,
        weight_bytes_float=93_440,
        weight_bytes_quantized=25_120,
    )
    calibration = Calibration(
        method="kl_divergence",
        samples_seen=160,
        batches=10,
        tensors=[
            TensorCalibration(
                name="input",
                threshold=2.64,
                scale=2.64 / 128,
                method="kl_divergence",
                kind="input",
                nbit=8,
                clipped=0.0004,
                mse_vs_max=0.82,
                sqnr_db=38.5,
            ),
            TensorCalibration(
                name="conv1.weight",
                threshold=[0.51, 0.33, 0.78],
                scale=[0.51 / 127, 0.33 / 127, 0.78 / 127],
                method="max",
                kind="weight",
                nbit=8,
            ),
            TensorCalibration(
                name="relu1",
                threshold=6.1,
                scale=6.1 / 128,
                method="max (fallback from kl_divergence)",
                kind="activation",
                nbit=8,
                clipped=0.0,
                mse_vs_max=1.0,
                sqnr_db=31.2,
            ),
        ],
    )
    provenance = Provenance(
        model_sha256="a" * 64,
        calibration_sha256="b" * 64,
        artifact_sha256="c" * 64,
        qconfig={"calibrate_mode": "kl_divergence", "skip_conv_layers": [0], "global_scale": 8.0},
        tvm_version="0.27.0.post1",
        target={"kind": "llvm", "mcpu": "znver3"},
        stage_seconds={"import": 0.41, "calibrate": 3.2, "build": 5.7, "verify": 1.9},
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        tvmq_version="0.1.0",
    )
    model = ModelInfo(
        file="resnet-mini.onnx",
        inputs=[TensorSpec(name="image", shape=[1, 3, 32, 32], dtype="float32")],
        outputs=[
            TensorSpec(name="logits", shape=[1, 10], dtype="float32"),
            TensorSpec(name="embedding", shape=[1, 64], dtype="float32"),
        ],
    )
    report = Report(
        model=model,
        summary=Summary.from_sections(
            integrality, accuracy, performance, "kl_divergence", do_simulation=False
        ),
        integrality=integrality,
        accuracy=accuracy,
        performance=performance,
        calibration=calibration,
        provenance=provenance,
    )
    return report.model_dump(mode="json")


@pytest.fixture
def sample_report() -> dict[str, Any]:
    """RENDERING FIXTURE (made-up numbers): a report with one float op in the integral core."""
    return build_sample_report()


@pytest.fixture
def make_sample_report() -> Callable[..., dict[str, Any]]:
    """RENDERING FIXTURE factory: build_sample_report(with_core_float=..., hostile_name=..., slower=...)."""
    return build_sample_report
