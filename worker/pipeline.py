"""The quantization pipeline as one call: ONNX + calibration + qconfig in, artifact + report out.

This is the single entry point shared by `tvmq quantize` (in-process) and the Celery task; it knows
nothing of HTTP or Celery. Progress is reported through a callback as (stage, percent).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from worker.errors import CalibrationError
from worker.qconfig import QConfig

#: (stage name, percent reached when the stage starts). The API shows these to users.
STAGES: tuple[tuple[str, int], ...] = (
    ("load", 0),
    ("import", 5),
    ("optimize", 12),
    ("partition", 16),
    ("annotate", 20),
    ("calibrate", 25),
    ("realize", 55),
    ("conversions", 60),
    ("build", 65),
    ("verify", 80),
    ("done", 100),
)

Progress = Callable[[str, int], None]


@dataclass
class PipelineResult:
    artifact: Path  # out_dir / "model.so"
    report_path: Path  # out_dir / "report.json"
    relax_script: Path  # out_dir / "quantized.relax.py"
    report: dict[str, Any] = field(default_factory=dict)


def _sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Stages:
    """Reports stage starts to the progress callback and times each stage."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress or (lambda stage, percent: None)
        self.percent = dict(STAGES)
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def start(self, stage: str) -> None:
        self._close()
        self._current = (stage, time.monotonic())
        self.progress(stage, self.percent[stage])

    def within(self, stage: str, fraction: float) -> None:
        """Progress inside a long stage (calibration), as a percentage between its neighbours."""
        names = [s for s, _ in STAGES]
        nxt = self.percent[names[names.index(stage) + 1]]
        self.progress(stage, int(self.percent[stage] + (nxt - self.percent[stage]) * min(fraction, 1.0)))

    def _close(self) -> None:
        if self._current:
            name, started = self._current
            self.seconds[name] = round(time.monotonic() - started, 3)

    def finish(self) -> None:
        self._close()
        self._current = None
        self.progress("done", 100)


def _split(
    calibration: dict[str, np.ndarray] | None, qconfig: QConfig, batch: int
) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """(calibration part, held-out part). Default hold-out: N//5 when that leaves both sides a batch."""
    if calibration is None:
        return None, None
    count = len(next(iter(calibration.values())))
    holdout = qconfig.holdout_samples
    if holdout is None:
        holdout = count // 5 if count // 5 >= batch and count - count // 5 >= batch else 0
    if holdout >= count:
        raise CalibrationError(
            f"holdout_samples={holdout} leaves no calibration samples (the data has {count})",
            field="holdout_samples",
        )
    if holdout == 0:
        return calibration, None
    return (
        {k: v[: count - holdout] for k, v in calibration.items()},
        {k: v[count - holdout :] for k, v in calibration.items()},
    )


def _eval_batches(
    batch: int,
    calib: dict[str, np.ndarray] | None,
    held: dict[str, np.ndarray] | None,
    shapes: dict[str, tuple[int, ...]],
    names: list[str],
    limit: int = 16,
) -> list[list[np.ndarray]]:
    """The report's evaluation inputs: held-out samples, else the calibration samples, else (no
    data at all, global_scale) seeded standard-normal inputs."""
    from worker.quantize.calibrate import batches

    data = held if held is not None else calib
    if data is None:
        rng = np.random.default_rng(0)
        data = {n: rng.standard_normal((batch * 4, *shapes[n][1:])).astype(np.float32) for n in names}
    return list(batches(data, names, batch, limit))


def run_pipeline(
    model_path: Path,
    calibration_path: Path | None,
    qconfig: QConfig,
    out_dir: Path,
    progress: Progress | None = None,
) -> PipelineResult:
    """Quantize and build one model. Raises a QuantizeError subclass on any user-facing failure."""
    stages = _Stages(progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    stages.start("load")  # first: importing TVM below takes seconds
    from tvm import __version__ as tvm_version

    from worker import frontend
    from worker.build import (
        compile_module,
        export,
        faster_native_isa,
        int8_isa,
        load_vm,
        make_target,
        resolve_target,
    )
    from worker.quantize.annotate import annotate
    from worker.quantize.calibrate import calibrate
    from worker.quantize.conversions import check_fully_integral, split_conversions
    from worker.quantize.graph import build_graph
    from worker.quantize.partition import partition
    from worker.quantize.prerequisite import prerequisite_optimize
    from worker.quantize.realize import realize
    from worker.report import verify
    from worker.report.performance import bench_artifacts, constant_bytes
    from worker.report.schema import Provenance, Report, Summary

    target_spec = resolve_target(qconfig.target_dict())
    target = make_target(target_spec)
    model = frontend.load_onnx(Path(model_path))
    calibration = frontend.load_calibration(calibration_path, model)
    if calibration is None and qconfig.calibrate_mode != "global_scale":
        raise CalibrationError(
            f"calibrate_mode={qconfig.calibrate_mode!r} needs calibration data (an .npz keyed by the "
            "model's input names); only global_scale works without",
            field="calibration",
        )

    stages.start("import")
    shapes = frontend.fixed_input_shapes(model, calibration)
    mod = frontend.import_relax(frontend.simplify(model, shapes), shapes)
    input_names = frontend.input_names(model)
    output_names = frontend.output_names(model)

    stages.start("optimize")
    mod = prerequisite_optimize(mod)
    graph = build_graph(mod)
    batch = int(graph.params[0].ty.shape[0])
    calib_part, held_part = _split(calibration, qconfig, batch)

    stages.start("partition")
    parts = partition(graph, qconfig)
    stages.start("annotate")
    annotation = annotate(graph, parts, qconfig)

    stages.start("calibrate")
    cal = calibrate(
        graph, annotation, calib_part, qconfig, target, progress=lambda f: stages.within("calibrate", f)
    )

    stages.start("realize")
    qmod, realizer = realize(graph, annotation, cal.thresholds, qconfig)
    script_path = out_dir / "quantized.relax.py"
    script_path.write_text(qmod.script(show_meta=False))

    stages.start("conversions")
    if qconfig.partition_conversions == "fully_integral":
        check_fully_integral(qmod, realizer.float_reasons)
    final = split_conversions(qmod) if qconfig.partition_conversions != "disabled" else qmod

    stages.start("build")
    artifact = export(compile_module(final, target), out_dir / "model.so")
    float_artifact = export(compile_module(mod, target), out_dir / "float_model.so")

    stages.start("verify")
    evals = _eval_batches(batch, calib_part, held_part, shapes, input_names)
    float_vm = load_vm(float_artifact)
    quant_vm = load_vm(artifact)
    accuracy = verify.accuracy(
        float_vm, quant_vm, evals, output_names, held_part is not None, graph, realizer, qconfig, target
    )
    integrality = verify.integrality(qmod, realizer.float_reasons)
    performance = bench_artifacts(
        float_artifact,
        artifact,
        evals[0],
        qconfig.bench_runs,
        weight_bytes_float=constant_bytes(mod),
        weight_bytes_quantized=constant_bytes(qmod),
    )
    nbits = {
        "input": qconfig.nbit_input,
        "activation": qconfig.nbit_activation,
        "weight": qconfig.nbit_weight,
    }
    calibration_section = verify.calibration_section(
        cal.method,
        cal.samples,
        cal.batches,
        cal.table,
        nbits,
        realizer.weight_log,
    )
    stages.finish()
    provenance = Provenance(
        model_sha256=_sha256(Path(model_path)),
        calibration_sha256=_sha256(calibration_path),
        artifact_sha256=_sha256(artifact),
        qconfig=qconfig.model_dump(mode="json"),
        tvm_version=str(tvm_version),
        target=target_spec,
        isa=int8_isa(target),
        native_isa=faster_native_isa(target),
        stage_seconds=stages.seconds,
        created_at=datetime.now(UTC),
        tvmq_version=_version(),
    )
    report = Report(
        summary=Summary.from_sections(
            integrality, accuracy, performance, qconfig.calibrate_mode, qconfig.do_simulation
        ),
        integrality=integrality,
        accuracy=accuracy,
        performance=performance,
        calibration=calibration_section,
        provenance=provenance,
    )
    data = report.model_dump(mode="json")
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(data, indent=2))
    from worker.report.html import render_report_html

    (out_dir / "report.html").write_text(render_report_html(data))
    return PipelineResult(artifact, report_path, script_path, data)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tvmq")
    except PackageNotFoundError:
        return "0+unknown"
