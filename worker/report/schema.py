"""The verification report's one data model, shared by the CLI, the Celery worker and the HTML page.

The service serves `report_schema()` at GET /report/schema and must not import TVM, so this module
is plain pydantic. Every model forbids unknown keys and non-finite floats: a misspelled field or an
`inf` SQNR in the assembling code fails at construction instead of producing a report that no JSON
parser (or user) can read. Cross-field invariants (counts agree with the op list, the summary agrees
with the sections) are validated here for the same reason: the report is the proof of integrality,
so it must not be able to contradict itself.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = "1.2"

OpGroup = Literal["prefix", "core", "suffix", "float_fallback"]
#: Why an op kept float dtypes, as the partition decided it: "no rule", "excluded by qconfig",
#: "skipped layer", "unsupported: <what its rule refuses>", "not int8-safe: <pattern>", "integer
#: tensors (...)", "layer norm: ...", "cancellation: ...", "float operands (...)"; "simulation" means
#: do_simulation built the fake-quantized float module.
FloatReason = Annotated[str, StringConstraints(min_length=1)]
TensorKind = Literal["input", "activation", "weight"]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class OpRecord(_Strict):
    """One kernel call of the artifact: a PrimFunc the library exports, called by a VM function."""

    name: str = Field(description="the kernel as the library exports it (its global symbol)")
    function: str = Field("main", description="the VM function that calls it")
    relax_op: str = Field(
        description='the kernel\'s kind: the Relax op that names it ("nn.conv2d", "matmul", ...), or '
        '"quantize" / "dequantize" / "elementwise" for a kernel of element-wise arithmetic only'
    )
    relax_ops: list[str] = Field(
        default_factory=list, description="every Relax op of the built module the kernel computes"
    )
    group: OpGroup
    inputs: list[str] = Field(description="input buffer dtypes")
    outputs: list[str] = Field(description="output buffer dtypes")
    computes: list[str] = Field(
        default_factory=list, description="every dtype the kernel's body uses (buffers, values, casts)"
    )
    integral: bool = Field(
        description="every dtype the kernel touches is an integer or bool type, or (exact_float) every "
        "op it computes is an integer op"
    )
    exact_float: bool = Field(
        False,
        description="integral through float32 arithmetic the builder chose for integer ops (exact: "
        "every value is an integer float32 holds)",
    )
    macs: int = Field(ge=0, description="multiply-accumulates per inference")
    reason: FloatReason | None = Field(None, description="why the kernel is float; None when integral")

    @model_validator(mode="after")
    def _reason_exactly_for_float(self) -> OpRecord:
        if self.integral and self.reason is not None:
            raise ValueError(f"op {self.name!r} is integral but has a float reason {self.reason!r}")
        if not self.integral and self.reason is None:
            raise ValueError(f"op {self.name!r} is float but says not why")
        if self.exact_float and not self.integral:
            raise ValueError(f"op {self.name!r} is exact_float but not integral")
        return self


class TableOp(_Strict):
    """A non-linear op computed in integers: a lookup table or an integer algorithm (softmax, layer norm)."""

    name: str = Field(description='the graph op, e.g. "tvmq.elementwise#0" or "nn.softmax#1"')
    function: str = Field(description='what it computes: "hard_swish", "gelu", "softmax", ...')
    form: str = Field(description='how: "lookup table", "integer softmax: ...", ...')
    input_scale: float = Field(gt=0.0)
    output_scale: float = Field(gt=0.0)
    max_abs_error: float | None = Field(
        None,
        ge=0.0,
        description="tables: largest |table - float function| over the input levels whose float "
        "output lies on the calibrated output grid (the rounding)",
    )
    max_error_steps: float | None = Field(None, ge=0.0, description="max_abs_error in output steps")
    clipped_levels: int | None = Field(
        None,
        ge=0,
        description="tables: input levels whose float output lies beyond the calibrated output "
        "range, so their entries are clipped to it",
    )


class OpCounts(_Strict):
    integer_ops: int = Field(ge=0)
    float_ops: int = Field(ge=0)
    integer_macs: int = Field(ge=0)
    float_macs: int = Field(ge=0)


class Integrality(_Strict):
    fully_integral: bool = Field(description="no op of the core group has a float input or output")
    ops: list[OpRecord] = Field(description="every kernel call of the artifact's main, in call order")
    counts: OpCounts
    float_in_core: list[str] = Field(description="names of the core ops that are not integral")
    tables: list[TableOp] = Field(
        default_factory=list, description="non-linear ops computed in integers, with their error"
    )

    @classmethod
    def from_ops(cls, ops: list[OpRecord], tables: list[TableOp] | None = None) -> Integrality:
        """The section derived from the op list alone: verdict, counts and float core ops."""
        core_float = _float_in_core(ops)
        return cls(
            fully_integral=not core_float,
            ops=ops,
            counts=_counts(ops),
            float_in_core=core_float,
            tables=tables or [],
        )

    @model_validator(mode="after")
    def _consistent(self) -> Integrality:
        expected_core = _float_in_core(self.ops)
        if self.float_in_core != expected_core:
            raise ValueError(f"float_in_core {self.float_in_core} != float core ops {expected_core}")
        if self.fully_integral != (not expected_core):
            raise ValueError(f"fully_integral={self.fully_integral} but float core ops are {expected_core}")
        expected = _counts(self.ops)
        if self.counts != expected:
            raise ValueError(f"counts {self.counts.model_dump()} != counts of ops {expected.model_dump()}")
        return self


def _float_in_core(ops: list[OpRecord]) -> list[str]:
    return [op.name for op in ops if op.group == "core" and not op.integral]


def _counts(ops: list[OpRecord]) -> OpCounts:
    return OpCounts(
        integer_ops=sum(op.integral for op in ops),
        float_ops=sum(not op.integral for op in ops),
        integer_macs=sum(op.macs for op in ops if op.integral),
        float_macs=sum(op.macs for op in ops if not op.integral),
    )


class OutputAccuracy(_Strict):
    name: str
    cosine: float = Field(ge=-1.0, le=1.0)
    sqnr_db: float = Field(description="capped at ±metrics.SQNR_CAP_DB (JSON has no infinity)")
    max_abs_error: float = Field(ge=0.0)
    mean_abs_error: float = Field(ge=0.0)
    top1_agreement: float | None = Field(None, ge=0.0, le=1.0, description="None unless class scores")
    nonfinite: int = Field(
        0, ge=0, description="elements where either output was NaN/inf; excluded from the other metrics"
    )


class LayerAccuracy(_Strict):
    name: str
    op: str
    sqnr_db: float
    cosine: float = Field(ge=-1.0, le=1.0)


class Accuracy(_Strict):
    samples: int = Field(ge=0)
    held_out: bool = Field(description="the samples were not seen by calibration")
    outputs: list[OutputAccuracy] = Field(min_length=1)
    layers: list[LayerAccuracy] = Field(
        description="per quantized tensor the artifact writes out (an int8 operand of an integer "
        "kernel), against the float model's tensor there, in graph order"
    )
    layer_samples: int = Field(0, ge=0, description="samples the per-layer figures were taken on")


class Latency(_Strict):
    median_ms: float = Field(ge=0.0)
    p90_ms: float = Field(ge=0.0)


Baseline = Literal["tvm_float", "onnxruntime_fp32"]
BASELINE_TITLES: dict[str, str] = {"tvm_float": "our float build", "onnxruntime_fp32": "ONNX Runtime fp32"}


class KernelTime(_Strict):
    name: str = Field(description="the kernel as the library exports it")
    relax_op: str = Field(description="its kind, as in the integrality section")
    calls: int = Field(ge=1, description="calls per inference")
    ms: float = Field(ge=0.0, description="time per inference, all its calls")
    share: float = Field(ge=0.0, le=1.0, description="of the time of every kernel call")


class Performance(_Strict):
    runs: int = Field(
        ge=1, description="timed runs per engine, interleaved (fewer than bench_runs when a run is slow)"
    )
    threads: int = Field(ge=1, description="TVM runtime thread pool size (ONNX Runtime gets as many)")
    float: Latency
    quantized: Latency
    onnxruntime: Latency | None = Field(
        None, description="ONNX Runtime fp32 on the original ONNX model, same inputs, same threads"
    )
    onnxruntime_note: str | None = Field(None, description="why ONNX Runtime was not measured")
    baseline: Baseline = Field(description="the faster float engine: what speedup compares with")
    speedup: float = Field(gt=0.0, description="the baseline's median / the quantized median")
    speedup_vs_float: float = Field(gt=0.0, description="our float build's median / the quantized median")
    hotspots: list[KernelTime] = Field(
        default_factory=list,
        description="when speedup < 1: the quantized build's slowest kernels (VM instrument)",
    )
    artifact_bytes: int = Field(ge=0, description="size of the quantized shared library")
    float_artifact_bytes: int = Field(ge=0)
    weight_bytes_float: int = Field(ge=0)
    weight_bytes_quantized: int = Field(ge=0)

    @model_validator(mode="after")
    def _speedup_against_the_faster_baseline(self) -> Performance:
        if self.onnxruntime is None and self.onnxruntime_note is None:
            raise ValueError("ONNX Runtime was not measured and the report does not say why")
        baseline, ms = faster_baseline(self.float, self.onnxruntime)
        if self.baseline != baseline:
            raise ValueError(f"baseline {self.baseline!r} is not the faster float engine ({baseline!r})")
        for name, value, expected in (
            ("speedup", self.speedup, ms / self.quantized.median_ms),
            ("speedup_vs_float", self.speedup_vs_float, self.float.median_ms / self.quantized.median_ms),
        ):
            if not math.isclose(value, expected, rel_tol=1e-9):
                raise ValueError(f"{name} {value} != {expected} from the latencies")
        return self


def faster_baseline(float_build: Latency, onnxruntime: Latency | None) -> tuple[Baseline, float]:
    """The float engine the speed-up compares with: the faster median of ours and ORT's."""
    if onnxruntime is not None and onnxruntime.median_ms < float_build.median_ms:
        return "onnxruntime_fp32", onnxruntime.median_ms
    return "tvm_float", float_build.median_ms


class TensorCalibration(_Strict):
    name: str
    threshold: float | list[float] = Field(description="clip range; a list when per-channel")
    scale: float | list[float] = Field(description="real value of one integer step; a list when per-channel")
    method: str = Field(
        description='the mode that chose the threshold, e.g. "kl_divergence", "power2", or '
        "\"max (fallback from kl_divergence)\" when the mode's own choice was worse than max's"
    )
    kind: TensorKind
    nbit: int = Field(ge=2, le=32, description="bits the tensor is quantized to")
    clipped: float | None = Field(
        None, ge=0.0, le=1.0, description="share of the calibration values above the threshold"
    )
    mse_vs_max: float | None = Field(
        None,
        ge=0.0,
        description="expected quantization MSE (rounding + clipping, from the calibration histogram) "
        "relative to the max threshold's: above 1 the mode lost resolution against max",
    )
    sqnr_db: float | None = Field(
        None, description="expected signal-to-quantization-noise ratio on the calibration histogram"
    )


class Calibration(_Strict):
    method: str
    samples_seen: int = Field(ge=0)
    batches: int = Field(ge=0)
    tensors: list[TensorCalibration]


class Specialization(_Strict):
    """An integer input the artifact was specialised to (worker/frontend/specialize.py)."""

    input: str
    value: int = Field(description="the only value the artifact accepts; any other fails the call")
    branches: list[str] = Field(description="the If nodes it resolved, with the branch kept")


class Provenance(_Strict):
    model_sha256: Sha256
    calibration_sha256: Sha256 | None = None
    artifact_sha256: Sha256
    qconfig: dict[str, Any] = Field(description="the qconfig as applied, defaults filled in")
    tvm_version: str
    target: dict[str, Any]
    isa: str | None = Field(
        None, description="instruction set of the int8 kernels (avx2, avxvnni, ...); None: TVM's default"
    )
    native_isa: str | None = Field(
        None, description='the faster int8 instruction set a "native" target would use on this worker'
    )
    pipeline: Literal["tvmq", "tvm"] = Field(
        "tvmq", description='the build pipeline of the artifact: "tvmq" (ours) or "tvm" (TVM\'s default)'
    )
    pipeline_fallback: str | None = Field(None, description="why ours failed, when TVM's built the artifact")
    stage_seconds: dict[str, float] = Field(description="wall time of each pipeline stage")
    created_at: datetime
    tvmq_version: str
    specialized_inputs: list[Specialization] = Field(
        default_factory=list,
        description="If branches chosen by an integer input whose every calibration sample had one "
        "value; the artifact refuses any other value of that input at run time",
    )


class SearchTrial(_Strict):
    index: int = Field(ge=0)
    phase: str = Field(description='"single config", "per-tensor modes", "fallback", "bring back", ...')
    delta: dict[str, Any] = Field(description="qconfig keys this trial sets differently from the user's")
    metric: float
    meets: bool
    float_layers: int = Field(ge=0, description="layers kept float (skip_layers)")
    integer_mac_share: float = Field(
        ge=0.0, le=1.0, description="share of the MACs the trial runs in integers"
    )
    seconds: float = Field(ge=0.0)


class SearchLayer(_Strict):
    name: str
    sqnr_db: float = Field(description="the layer alone on fake-quantized operands, against float")


class Search(_Strict):
    """The accuracy-target search: its trials on the simulated module, the winner built for real."""

    metric: str
    target: float = Field(description="the lowest metric value that meets tolerable_loss")
    tolerable_loss: float
    loss: str
    output: str = Field(description="the model output the metric reads")
    source: Literal["validation", "held_out", "calibration"] = Field(
        description="the feeds scored: the validation upload, the held-out calibration samples, or (too "
        "few samples to hold any out) the calibration samples themselves"
    )
    samples: int = Field(ge=0)
    knobs: list[str]
    verdict: Literal["met", "missed", "unreachable_integral"]
    why: str
    blocking: list[str] = Field(description="layers that block the target (the most sensitive first)")
    stopped: str | None = Field(None, description="max_trials or timeout_s, when the budget ended the search")
    trials: list[SearchTrial]
    winner: int = Field(ge=0, description="index of the trial that was built")
    winner_delta: dict[str, Any]
    built_metric: float | None = Field(None, description="the metric of the built artifact on the same feeds")
    built_meets: bool | None = None
    winner_latency_ms: float | None = Field(None, ge=0.0, description="the built winner's median latency")
    sensitivity: list[SearchLayer] = Field(description="per-layer SQNR alone, most sensitive first")
    seconds: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _winner_exists(self) -> Search:
        if self.winner >= len(self.trials):
            raise ValueError(f"winner {self.winner} is not one of the {len(self.trials)} trials")
        return self


class Summary(_Strict):
    fully_integral: bool
    cosine: float = Field(ge=-1.0, le=1.0, description="the worst output's")
    sqnr_db: float = Field(description="the worst output's")
    top1_agreement: float | None = Field(None, ge=0.0, le=1.0, description="the worst class-score output's")
    speedup: float = Field(gt=0.0, description="against the faster float engine (speedup_baseline)")
    speedup_baseline: Baseline
    float_latency_ms: float = Field(ge=0.0)
    onnxruntime_latency_ms: float | None = Field(None, ge=0.0)
    quantized_latency_ms: float = Field(ge=0.0)
    calibrate_mode: str
    do_simulation: bool

    @classmethod
    def from_sections(
        cls,
        integrality: Integrality,
        accuracy: Accuracy,
        performance: Performance,
        calibrate_mode: str,
        do_simulation: bool,
    ) -> Summary:
        """Derive the summary so that it can never disagree with the sections it summarizes."""
        top1 = [o.top1_agreement for o in accuracy.outputs if o.top1_agreement is not None]
        return cls(
            fully_integral=integrality.fully_integral,
            cosine=min(o.cosine for o in accuracy.outputs),
            sqnr_db=min(o.sqnr_db for o in accuracy.outputs),
            top1_agreement=min(top1) if top1 else None,
            speedup=performance.speedup,
            speedup_baseline=performance.baseline,
            float_latency_ms=performance.float.median_ms,
            onnxruntime_latency_ms=performance.onnxruntime.median_ms if performance.onnxruntime else None,
            quantized_latency_ms=performance.quantized.median_ms,
            calibrate_mode=calibrate_mode,
            do_simulation=do_simulation,
        )


class TensorSpec(_Strict):
    name: str
    shape: list[int] = Field(description="as built (dynamic dimensions fixed)")
    dtype: str


class ModelInfo(_Strict):
    file: str = Field(description="the ONNX file's name as the user gave it")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Report(_Strict):
    schema_version: Literal["1.2"] = SCHEMA_VERSION
    model: ModelInfo
    summary: Summary
    integrality: Integrality
    accuracy: Accuracy
    performance: Performance
    calibration: Calibration
    provenance: Provenance
    search: Search | None = None

    @model_validator(mode="after")
    def _summary_matches(self) -> Report:
        expected = Summary.from_sections(
            self.integrality,
            self.accuracy,
            self.performance,
            self.summary.calibrate_mode,
            self.summary.do_simulation,
        )
        if self.summary != expected:
            diff = {
                key: (value, getattr(expected, key))
                for key, value in self.summary
                if value != getattr(expected, key)
            }
            raise ValueError(f"summary disagrees with the sections (given, derived): {diff}")
        return self


def report_schema() -> dict[str, Any]:
    """The JSON schema served at GET /report/schema."""
    return Report.model_json_schema()
