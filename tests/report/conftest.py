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
    Latency,
    LayerAccuracy,
    OpRecord,
    OutputAccuracy,
    Performance,
    Provenance,
    Report,
    Summary,
    TensorCalibration,
)


def _ops(with_core_float: bool) -> list[OpRecord]:
    ops = [
        OpRecord(
            name="conv2d_add_relu",
            relax_op="fused_conv2d_add_relu",
            group="float_fallback",
            inputs=["float32", "float32", "float32"],
            outputs=["float32"],
            integral=False,
            macs=3 * 16 * 9 * 32 * 32,
            reason="skipped layer",
        ),
        OpRecord(
            name="quantize",
            relax_op="quantize",
            group="prefix",
            inputs=["float32"],
            outputs=["int8"],
            integral=False,
            macs=0,
        ),
    ]
    for i in range(1, 6):
        ops.append(
            OpRecord(
                name=f"fused_conv2d{i}_add{i}_right_shift{i}_clip{i}_cast{i}",
                relax_op="fused_conv2d_add_right_shift_clip_cast",
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
                    relax_op="sigmoid",
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
            relax_op="nn.max_pool2d",
            group="core",
            inputs=["int8"],
            outputs=["int8"],
            integral=True,
            macs=0,
        ),
        OpRecord(
            name="dequantize",
            relax_op="dequantize",
            group="suffix",
            inputs=["int8"],
            outputs=["float32"],
            integral=False,
            macs=0,
        ),
        OpRecord(
            name="matmul_add",
            relax_op="fused_matmul_add",
            group="float_fallback",
            inputs=["float32", "float32"],
            outputs=["float32"],
            integral=False,
            macs=512 * 10,
            reason="excluded by qconfig",
        ),
    ]
    return ops


def build_sample_report(*, with_core_float: bool = True, hostile_name: str | None = None) -> dict[str, Any]:
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
    performance = Performance(
        runs=20,
        threads=1,
        float=Latency(median_ms=4.81, p90_ms=5.02),
        quantized=Latency(median_ms=3.12, p90_ms=3.40),
        speedup=4.81 / 3.12,
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
    report = Report(
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
    """RENDERING FIXTURE factory: build_sample_report(with_core_float=..., hostile_name=...)."""
    return build_sample_report
