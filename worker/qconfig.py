"""The quantization config: Relay's `qconfig` fields, validated strictly, with defaults that work.

Relay silently ignored misspelled keys; here an unknown key or an out-of-range value is a
`QConfigError` naming the field. Relay's defaults (one global threshold of 8.0, the first conv and
every dense left in float) collapse real models, so the defaults calibrate from data with
per-channel weights and quantize every layer; `"preset": "relay"` restores Relay's exact defaults,
and keys given explicitly override either. This module is imported by the HTTP service: no TVM
import.
"""

from __future__ import annotations

import json
import platform
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import QConfigError

IntDType = Literal["int8", "int16", "int32"]

#: The target that builds for the worker's own CPU (resolved to its LLVM name by worker.build).
NATIVE_TARGET = "native"

#: Relax op names (without the "relax." prefix) that `exclude_ops` / `debug_enabled_ops` may name:
#: the op registry's (worker/quantize/ops/) names, copied here TVM-free so that the service validates
#: a qconfig without loading the registry. tests/quantize/test_units.py fails when they differ.
QUANTIZABLE_OPS: tuple[str, ...] = (
    "add",
    "clip",
    "concat",
    "divide",
    "erf",
    "exp",
    "expand_dims",
    "flatten",
    "image.resize2d",
    "matmul",
    "maximum",
    "mean",
    "minimum",
    "multiply",
    "nn.adaptive_avg_pool2d",
    "nn.avg_pool2d",
    "nn.conv1d",
    "nn.conv2d",
    "nn.conv2d_transpose",
    "nn.gelu",
    "nn.gelu_tanh",
    "nn.layer_norm",
    "nn.leakyrelu",
    "nn.max_pool2d",
    "nn.prelu",
    "nn.relu",
    "nn.selu",
    "nn.silu",
    "nn.softmax",
    "nn.softplus",
    "permute_dims",
    "reshape",
    "sigmoid",
    "split",
    "squeeze",
    "strided_slice",
    "subtract",
    "tanh",
    "tvmq.elementwise",
)
#: What the validators accept: QUANTIZABLE_OPS, plus each op the registry registers in this process.
_ACCEPTED_OPS: set[str] = set(QUANTIZABLE_OPS)


def accept_op(name: str) -> None:
    """Called by the op registry for every rule it registers, so its names are accepted here."""
    _ACCEPTED_OPS.add(name)


#: `relay.quantize.qconfig()`'s defaults where ours differ: what `"preset": "relay"` fills in.
RELAY_PRESET: dict[str, Any] = {
    "calibrate_mode": "global_scale",
    "weight_scale": "power2",
    "per_channel": False,
    "skip_conv_layers": [0],
    "skip_dense_layer": True,
    "partition_conversions": "disabled",
}
PRESETS: dict[str, dict[str, Any]] = {"tvmq": {}, "relay": RELAY_PRESET}

CalibrateMode = Literal["global_scale", "max", "percentile", "kl_divergence", "mse"]
#: What a search may vary (see worker/search/): per-layer float fallback, the calibrate mode of the
#: whole model and of each tensor, per-channel weights, the percentile value, 7-bit weights.
SearchKnob = Literal[
    "fallback", "calibrate_mode", "tensor_calibrate_mode", "per_channel", "percentile", "weight_bits"
]
#: Metrics the search scores a trial with, against the float model's outputs on held-out feeds.
SearchMetric = Literal["top1_agreement", "cosine", "sqnr_db", "ctc_string_agreement"]
#: A layer label as the report names it: "<relax op>#<index among that op, graph order>".
_LAYER_LABEL = re.compile(r"[a-z_0-9.]+#\d+")


class SearchConfig(BaseModel):
    """The accuracy target: find the most integral, fastest config whose metric stays within
    `tolerable_loss` of the float model's (which scores 1 against itself on every metric but
    sqnr_db, whose loss is the noise-to-signal power ratio: 0.01 is 20 dB)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: SearchMetric = Field(
        description="top1_agreement (argmax over the last axis), cosine, sqnr_db, ctc_string_agreement "
        "(argmax per step, repeats merged, blank 0 dropped: identical decoded strings)"
    )
    tolerable_loss: float = Field(gt=0.0, le=1.0, description="how much of the metric may be lost")
    loss: Literal["relative", "absolute"] = Field(
        "relative",
        description="relative: metric >= reference x (1 - loss); absolute: metric >= reference - loss "
        "(the reference is the float model against itself: 1, so both read the same but for sqnr_db, "
        "which takes relative only)",
    )
    max_trials: int = Field(40, ge=1, le=1000, description="trials before the search stops")
    timeout_s: float = Field(600.0, gt=0.0, le=86400.0, description="wall time before the search stops")
    knobs: list[SearchKnob] = Field(
        default_factory=lambda: [
            "fallback",
            "calibrate_mode",
            "tensor_calibrate_mode",
            "percentile",
            "weight_bits",
        ],
        description="what may vary; int16 activations are not offered (the kernels are int8 x int8)",
    )
    output: str | int = Field(0, description="the model output the metric reads: its name or index")
    max_feeds: int = Field(64, ge=1, le=100000, description="validation feeds each trial runs")

    @field_validator("knobs")
    @classmethod
    def _knobs(cls, v: list[str]) -> list[str]:
        return sorted(set(v), key=v.index)

    @model_validator(mode="after")
    def _sqnr_relative(self) -> SearchConfig:
        if self.metric == "sqnr_db" and self.loss == "absolute":
            raise ValueError("sqnr_db takes a relative loss (noise power / signal power), not absolute")
        return self


class QConfig(BaseModel):
    """One job's quantization settings. Defaults are tvmq's (`preset` "tvmq"); preset "relay" gives
    Relay's `relay.quantize.qconfig()` defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    preset: Literal["tvmq", "relay"] = Field(
        "tvmq",
        description="defaults for the keys not given: tvmq's, or Relay's exact qconfig() defaults "
        f"({', '.join(f'{k}={v!r}' for k, v in RELAY_PRESET.items())})",
    )
    nbit_input: int = Field(8, ge=2, le=8, description="bits of quantized inputs to compute ops")
    nbit_weight: int = Field(8, ge=2, le=8, description="bits of quantized weights")
    nbit_activation: int = Field(
        32, description="bits of activations between ops: 32 keeps int32 accumulators, 8 requantizes"
    )
    dtype_input: IntDType = "int8"
    dtype_weight: IntDType = "int8"
    dtype_activation: IntDType = "int32"
    calibrate_mode: CalibrateMode = Field(
        "max",
        description="activation thresholds: global_scale (no data), max, percentile, kl_divergence, mse; "
        "a data-driven mode's threshold worse than max's in expected error falls back to max",
    )
    global_scale: float = Field(8.0, gt=0, le=1e6, description="activation threshold for global_scale")
    weight_scale: Literal["power2", "max"] = "max"
    per_channel: bool = Field(True, description="one weight scale per output channel")
    percentile: float = Field(99.999, gt=50.0, le=100.0, description="percentile mode: |x| percentile")
    skip_conv_layers: list[int] | None = Field(
        default_factory=list, description="indices of conv layers (in graph order) left in float"
    )
    skip_dense_layer: bool = Field(False, description="keep every dense (Gemm/MatMul with weights) in float")
    skip_layers: list[str] = Field(
        default_factory=list,
        description='layers left in float by their report label ("nn.conv2d#3": the 4th conv2d in graph '
        "order); what a search's winner keeps float",
    )
    tensor_calibrate_mode: dict[str, CalibrateMode] = Field(
        default_factory=dict,
        description='calibrate_mode of single tensors by report label ("nn.conv2d#3", or an input '
        "name), overriding calibrate_mode there",
    )
    exclude_ops: list[str] = Field(default_factory=list, description="op names that always stay float")
    debug_enabled_ops: list[str] | None = Field(
        None, description="if set, only these op names are quantized (Relay's debug_enabled_ops)"
    )
    do_simulation: bool = Field(False, description="build the fake-quantized float module instead")
    lut_activations: bool = Field(
        True,
        description="element-wise functions of int8 tensors (sigmoid, GELU, hard-swish, SiLU, ...) as "
        "256-entry lookup tables; false keeps them float",
    )
    round_for_shift: bool = Field(True, description="round (not truncate) in power-of-two right shifts")
    rounding: Literal["UPWARD", "TONEAREST"] = "UPWARD"
    calibrate_chunk_by: int = Field(
        -1, description="intermediate tensors collected per calibration run; -1 = all at once"
    )
    calibration_batches: int | None = Field(
        None, ge=1, description="use at most this many batches of the calibration data"
    )
    holdout_samples: int | None = Field(
        None, ge=0, description="samples kept out of calibration for the accuracy report (default N//5)"
    )
    partition_conversions: Literal["disabled", "enabled", "fully_integral"] = "enabled"
    target: str | dict[str, Any] = Field(
        "llvm",
        description='TVM target: "llvm", "native" (the worker\'s CPU), "llvm -mcpu=znver3" or a dict',
    )
    bench_runs: int = Field(20, ge=1, le=10000, description="timed runs per build in the report")
    search: SearchConfig | None = Field(
        None, description="an accuracy target: search the knobs for the most integral config that meets it"
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """Fill the preset's values for the keys not given (an unknown preset is left to the field)."""
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return {**PRESETS[data["preset"]], **data}
        return data

    @field_validator("nbit_activation")
    @classmethod
    def _activation_bits(cls, v: int) -> int:
        if v not in (8, 16, 32):
            raise ValueError("must be 8, 16 or 32")
        return v

    @field_validator("calibrate_chunk_by")
    @classmethod
    def _chunk(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("must be -1 (everything in one run) or a positive count")
        return v

    @field_validator("skip_conv_layers")
    @classmethod
    def _skip(cls, v: list[int] | None) -> list[int]:
        v = [] if v is None else v
        if any(i < 0 for i in v):
            raise ValueError("conv layer indices start at 0")
        return sorted(set(v))

    @field_validator("skip_layers")
    @classmethod
    def _layer_labels(cls, v: list[str]) -> list[str]:
        bad = [label for label in v if not _LAYER_LABEL.fullmatch(label)]
        if bad:
            raise ValueError(f"layer labels look like 'nn.conv2d#3' (as the report names layers), got {bad}")
        return sorted(set(v), key=v.index)

    @field_validator("exclude_ops", "debug_enabled_ops")
    @classmethod
    def _op_names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        unknown = [name for name in v if name.removeprefix("relax.") not in _ACCEPTED_OPS]
        if unknown:
            raise ValueError(f"unknown op name(s) {unknown}; quantizable ops are {sorted(_ACCEPTED_OPS)}")
        return [name.removeprefix("relax.") for name in v]

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | dict[str, Any]) -> str | dict[str, Any]:
        if v == NATIVE_TARGET:
            return v
        kind = v.get("kind") if isinstance(v, dict) else v.split()[0] if v.strip() else ""
        if kind != "llvm":
            raise ValueError(f"only CPU (llvm) targets are built by this service, got kind {kind!r}")
        triple = _target_dict(v).get("mtriple")
        arch = str(triple or "").split("-")[0]
        if arch and arch not in _HOST_ARCHES.get(platform.machine(), {platform.machine()}):
            raise ValueError(
                f"cross-compilation to {triple!r} is not supported: the model is run on this "
                f"{platform.machine()} machine to calibrate, verify and time it; drop mtriple"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> QConfig:
        for prefix in ("input", "weight", "activation"):
            nbit = getattr(self, f"nbit_{prefix}")
            width = int(getattr(self, f"dtype_{prefix}").removeprefix("int"))
            if nbit > width:
                raise ValueError(f"nbit_{prefix}={nbit} does not fit dtype_{prefix}=int{width}")
        if self.do_simulation and self.partition_conversions == "fully_integral":
            raise ValueError(
                "do_simulation builds a float (fake-quantized) module: it cannot be fully_integral"
            )
        if self.search is not None and self.do_simulation:
            raise ValueError("search builds its winner for real: it cannot be combined with do_simulation")
        if self.dtype_input != "int8" or self.dtype_weight != "int8":
            raise ValueError("dtype_input and dtype_weight must be int8 (the int8 x int8 -> int32 kernels)")
        return self

    def target_dict(self) -> dict[str, Any]:
        """The target in TVM 0.27's dict form; the legacy "llvm -mcpu=x -opt=y" string is translated."""
        if isinstance(self.target, dict):
            return dict(self.target)
        if self.target == NATIVE_TARGET:
            return {"kind": "llvm", "mcpu": "native"}
        kind, *flags = self.target.split()
        out: dict[str, Any] = {"kind": kind}
        for flag in flags:
            key, _, value = flag.lstrip("-").partition("=")
            out[key] = value if value else True
        return out


#: LLVM's names of the machine's own architecture (a triple may say amd64 or x86_64).
_HOST_ARCHES = {"x86_64": {"x86_64", "amd64", "x86-64"}, "aarch64": {"aarch64", "arm64"}}


def _target_dict(target: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(target, dict):
        return dict(target)
    kind, *flags = target.split() or [""]
    out: dict[str, Any] = {"kind": kind}
    for flag in flags:
        key, _, value = flag.lstrip("-").partition("=")
        out[key] = value if value else True
    return out


def _field_of(error: dict[str, Any]) -> str:
    return ".".join(str(p) for p in error.get("loc", ())) or "qconfig"


def parse_qconfig(data: str | bytes | dict[str, Any] | None) -> QConfig:
    """Parse JSON text or a dict into a QConfig, or raise QConfigError naming the first bad field."""
    if data is None or (isinstance(data, str | bytes) and not data.strip()):
        return QConfig()
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:  # also nesting too deep, an integer too long
            raise QConfigError(f"qconfig is not valid JSON: {exc}", field="qconfig") from None
    if not isinstance(data, dict):
        raise QConfigError("qconfig must be a JSON object", field="qconfig")
    try:
        return QConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        field = _field_of(first)
        reason = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown qconfig key {field!r}"
        elif not first.get("loc"):  # a rule across fields
            message = f"invalid qconfig: {reason}"
        else:
            message = f"qconfig field {field!r}: {reason}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s): {[_field_of(e) for e in errors[1:]]})"
        raise QConfigError(message, field=field) from None


def qconfig_schema() -> dict[str, Any]:
    return QConfig.model_json_schema()
