"""ONNX Runtime's static int8 quantization of a corpus model, run in a child process.

`python -m bench.realmodels.ort_quantize SRC DST CALIBRATION.npz [--per-channel]`: ORT's documented
recipe. First `quant_pre_process` (shape inference + ORT's graph optimisation: without it the
Identity/Cast in front of PaddlePaddle's conv weights hide them from the quantizer, which then
quantizes them per-tensor as activations even with per_channel); when it fails the model goes as
it is, and DST.json says so. Then `quantize_static`: QDQ, int8 activations and weights, MinMax
calibration on the same feeds tvmq calibrates on. ORT refuses per-channel QDQ on opset < 13 (its
DequantizeLinear has no `axis` there), so per-channel first converts to opset 13 with
onnx.version_converter. A child process, because ORT's quantizer can crash or hang on real models:
that is a result for the table, never the harness's end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import onnx
from onnx import version_converter

from bench.realmodels.feeds import read_calibration

PER_CHANNEL_MIN_OPSET = 13


def default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def pre_process(src: Path, dst: Path) -> tuple[Path, dict[str, str]]:
    """ORT's quant_pre_process; without its symbolic shape inference where that fails on dynamic
    dims (ORT's own advice); the model as it is when both fail. Returns the model and what was done."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    errors = []
    for skip_symbolic, note in ((False, "ok"), (True, "ok without symbolic shape inference")):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
            return dst, {"pre_process": note}
        except Exception as exc:  # ORT's own step failing is a fact to record, not the end
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
    return src, {"pre_process": "failed: " + " / ".join(errors)}


def quantize(src: Path, dst: Path, calibration: Path, per_channel: bool) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    feeds = read_calibration(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        model_path, notes = pre_process(src, Path(tmp) / "pre.onnx")
        model = onnx.load(str(model_path))
        if per_channel and default_opset(model) < PER_CHANNEL_MIN_OPSET:
            model_path = Path(tmp) / "opset13.onnx"
            notes["opset"] = f"{default_opset(model)} -> {PER_CHANNEL_MIN_OPSET}"
            onnx.save(version_converter.convert_version(model, PER_CHANNEL_MIN_OPSET), str(model_path))
        quantize_static(
            str(model_path),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    dst.with_suffix(".json").write_text(json.dumps(notes))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("calibration", type=Path)
    parser.add_argument("--per-channel", action="store_true")
    args = parser.parse_args()
    quantize(args.src, args.dst, args.calibration, args.per_channel)


if __name__ == "__main__":
    main()
