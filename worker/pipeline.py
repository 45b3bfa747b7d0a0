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
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.qconfig import QConfig

if TYPE_CHECKING:  # the stages import TVM when they run, after "load" is reported
    import tvm

    from worker.build import Compiled
    from worker.frontend import CalibrationSet, ModelInput, Pin, Upload
    from worker.quantize.annotate import Annotation
    from worker.quantize.calibrate import CalibrationResult, Runner
    from worker.quantize.classify import OpInfo
    from worker.quantize.graph import Graph
    from worker.quantize.partition import Partition
    from worker.quantize.realize import Realizer
    from worker.report.schema import ModelInfo, Provenance
    from worker.search import Found

#: (stage name, percent reached when the stage starts). The API shows these to users.
STAGES: tuple[tuple[str, int], ...] = (
    ("load", 0),
    ("import", 5),
    ("optimize", 12),
    ("partition", 16),
    ("annotate", 20),
    ("calibrate", 25),
    ("search", 45),
    ("realize", 60),
    ("conversions", 63),
    ("build", 66),
    ("verify", 80),
    ("done", 100),
)

#: progress(stage, percent) at every stage; a search's trials add a third argument, a dict with
#: `trial`, `of`, `metric` (this trial's), `best` (the best metric so far), `phase`, `meets`.
Progress = Callable[..., None]

#: feeds the report evaluates (accuracy, the first one for latency)
_EVAL_FEEDS = 16


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
        self.progress = progress or (lambda stage, percent, detail=None: None)
        self.percent = dict(STAGES)
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def start(self, stage: str) -> None:
        self._close()
        self._current = (stage, time.monotonic())
        self.progress(stage, self.percent[stage])

    def within(self, stage: str, fraction: float, detail: dict[str, Any] | None = None) -> None:
        """Progress inside a long stage (calibration, search), as a percentage between its
        neighbours; `detail` (a search trial) is passed on as a third argument."""
        names = [s for s, _ in STAGES]
        nxt = self.percent[names[names.index(stage) + 1]]
        percent = int(self.percent[stage] + (nxt - self.percent[stage]) * min(fraction, 1.0))
        if detail is None:
            self.progress(stage, percent)
        else:
            self.progress(stage, percent, detail)

    def _close(self) -> None:
        if self._current:
            name, started = self._current
            self.seconds[name] = round(time.monotonic() - started, 3)

    def finish(self) -> None:
        self._close()
        self._current = None
        self.progress("done", 100)


def run_pipeline(
    model_path: Path,
    calibration_path: Path | None,
    qconfig: QConfig,
    out_dir: Path,
    progress: Progress | None = None,
    validation_path: Path | None = None,
    model_name: str | None = None,
) -> PipelineResult:
    """Quantize and build one model. Raises a QuantizeError subclass on any user-facing failure.

    With a `search` in the qconfig, the search stage picks the config that is built (and that the
    report's provenance shows); `validation_path` (the calibration contract) is what it scores,
    else the held-out calibration samples. `model_name` is the file name the user gave the model
    (default: the file's own)."""
    stages = _Stages(progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    stages.start("load")
    upload = _load(Path(model_path), calibration_path, qconfig, validation_path)  # before TVM
    target_spec, target = _target(qconfig)  # the stages import TVM, which takes seconds
    run = _runner(target)
    stages.start("import")
    imported = _import(upload)
    stages.start("optimize")
    prepared = _optimize(imported, upload, qconfig)
    stages.start("partition")
    parts = _partition(prepared, qconfig)
    stages.start("annotate")
    annotation = _annotate(prepared, parts, qconfig)
    stages.start("calibrate")
    cal = _calibrate(prepared, annotation, qconfig, run, lambda f: stages.within("calibrate", f))
    found = None
    if qconfig.search is not None:
        stages.start("search")
        found = _search(prepared, cal, qconfig, run, target, stages)
        qconfig, annotation, cal = found.qconfig, found.annotation, found.calibration
    stages.start("realize")
    realized = _realize(prepared, annotation, cal, qconfig, out_dir)
    stages.start("conversions")
    final = _conversions(realized, qconfig)
    stages.start("build")
    built = _build(final, prepared, realized, qconfig, target, out_dir)
    stages.start("verify")
    sections = _verify(prepared, annotation, realized, cal, built, qconfig, run, Path(model_path), found)
    stages.finish()
    provenance = _provenance(
        Path(model_path), calibration_path, built, qconfig, target_spec, target, stages, imported.pins
    )
    info = _model_info(model_name or Path(model_path).name, prepared)
    report_path, report = _write_report(info, sections, provenance, qconfig, out_dir)
    return PipelineResult(built.artifact, report_path, realized.script, report)


@dataclass
class _Imported:
    """The model as Relax, with the input shapes it was imported for."""

    mod: tvm.IRModule
    shapes: dict[str, tuple[int, ...]]
    inputs: list[ModelInput]
    output_names: list[str]
    #: integer inputs the model was specialised to (an If on them resolved); main refuses others
    pins: list[Pin] = field(default_factory=list)


@dataclass
class _Prepared:
    """The optimized float model the passes work on, and the samples split for calibration/report."""

    imported: _Imported
    mod: tvm.IRModule
    graph: Graph
    calibration: CalibrationSet | None
    held_out: CalibrationSet | None
    validation: CalibrationSet | None = None

    def evaluation(self) -> tuple[CalibrationSet | None, str]:
        """What accuracy is measured on: the validation upload, the held-out samples, else the
        calibration samples themselves (too few to hold any out), and which of them it is."""
        if self.validation is not None:
            return self.validation, "validation"
        if self.held_out is not None:
            return self.held_out, "held_out"
        return self.calibration, "calibration"


@dataclass
class _Realized:
    mod: tvm.IRModule
    realizer: Realizer
    script: Path


@dataclass
class _Built:
    artifact: Path
    float_artifact: Path
    compiled: Compiled  # the quantized build: its lowering and pipeline
    ops: list[OpInfo]  # its kernels, classified


def _target(qconfig: QConfig) -> tuple[dict[str, Any], tvm.target.Target]:
    from worker.build import make_target, resolve_target

    spec = resolve_target(qconfig.target_dict())
    return spec, make_target(spec)


def _runner(target: tvm.target.Target) -> Runner:
    """What calibrate and verify run modules with: built like the artifact, loaded in-process."""
    from worker.build import compile_and_load

    return partial(compile_and_load, target=target)


def _load(
    model_path: Path, calibration_path: Path | None, qconfig: QConfig, validation_path: Path | None
) -> Upload:
    """The upload contract (the API checks the same), then every calibration and validation value."""
    from worker import frontend

    upload = frontend.open_upload(
        model_path,
        Path(calibration_path) if calibration_path else None,
        qconfig,
        validation_path=Path(validation_path) if validation_path else None,
    )
    for samples in (upload.calibration, upload.validation):
        if samples is not None:
            samples.check_values()
    return upload


def _import(upload: Upload) -> _Imported:
    from worker import frontend

    shapes = frontend.fixed_input_shapes(upload.model, upload.calibration)
    model, pins = frontend.specialize(upload.model, upload.calibration)
    mod = frontend.import_relax(frontend.simplify(model, shapes), shapes)
    return _Imported(mod, shapes, upload.inputs, frontend.output_names(upload.model), pins)


def _optimize(imported: _Imported, upload: Upload, qconfig: QConfig) -> _Prepared:
    from worker.quantize.graph import build_graph
    from worker.quantize.prerequisite import prerequisite_optimize

    mod = prerequisite_optimize(imported.mod)
    calibration = upload.calibration
    calib_part, held_part = (
        calibration.split_holdout(qconfig.holdout_samples) if calibration is not None else (None, None)
    )
    return _Prepared(imported, mod, build_graph(mod), calib_part, held_part, upload.validation)


def _partition(prepared: _Prepared, qconfig: QConfig) -> Partition:
    from worker.quantize.partition import partition

    return partition(prepared.graph, qconfig)


def _annotate(prepared: _Prepared, parts: Partition, qconfig: QConfig) -> Annotation:
    from worker.quantize.annotate import annotate

    return annotate(prepared.graph, parts, qconfig)


def _calibrate(
    prepared: _Prepared,
    annotation: Annotation,
    qconfig: QConfig,
    run: Runner,
    progress: Callable[[float], None],
) -> CalibrationResult:
    from worker.quantize.calibrate import calibrate
    from worker.quantize.partition import apply_float_safety
    from worker.search import calibration_variants

    variants = calibration_variants(qconfig) if qconfig.search is not None else ()
    cal = calibrate(
        prepared.graph, annotation, prepared.calibration, qconfig, run, progress=progress, variants=variants
    )
    # ops whose calibrated ranges would not survive int8 stay float (the rules' float_safety)
    apply_float_safety(prepared.graph, annotation.partition, cal.thresholds)
    return cal


def _search(
    prepared: _Prepared,
    cal: CalibrationResult,
    qconfig: QConfig,
    run: Runner,
    target: tvm.target.Target,
    stages: _Stages,
) -> Found:
    """The accuracy-target search: trials on one simulation, a progress line per trial."""
    from worker import search
    from worker.kernels import isa

    feeds, source = prepared.evaluation()
    # 7-bit weights are worth a trial where the int8 kernels saturate 8-bit pairs (AVX2, AVX-512BW)
    chosen = isa.select(target)
    narrow_faster = chosen is not None and chosen.dots[0].pair_sum_bits is not None

    def progress(k: int, n: int, trial: search.Trial, best: search.Trial) -> None:
        detail = {
            "trial": k,
            "of": n,
            "phase": trial.phase,
            "metric": round(trial.metric, 6),
            "meets": trial.meets,
            "best": round(best.metric, 6),
        }
        stages.within("search", k / n, detail)

    return search.search(
        prepared.graph,
        cal,
        qconfig,
        feeds,
        source,
        prepared.imported.output_names,
        run,
        narrow_faster=narrow_faster,
        progress=progress,
    )


def _realize(
    prepared: _Prepared, annotation: Annotation, cal: CalibrationResult, qconfig: QConfig, out_dir: Path
) -> _Realized:
    from worker.quantize.realize import realize

    qmod, realizer = realize(prepared.graph, annotation, cal.thresholds, qconfig)
    script = out_dir / "quantized.relax.py"
    script.write_text(qmod.script(show_meta=False))
    return _Realized(qmod, realizer, script)


def _conversions(realized: _Realized, qconfig: QConfig) -> tvm.IRModule:
    from worker.quantize.conversions import split_conversions

    return split_conversions(realized.mod) if qconfig.partition_conversions != "disabled" else realized.mod


def _build(
    final: tvm.IRModule,
    prepared: _Prepared,
    realized: _Realized,
    qconfig: QConfig,
    target: tvm.target.Target,
    out_dir: Path,
) -> _Built:
    """The artifact, its kernels classified (fully_integral is checked on them, before the float
    build), and the float build."""
    from worker.build import compile_module, compile_traced, export
    from worker.frontend.guard import guard_pins
    from worker.quantize.classify import artifact_ops, classify
    from worker.quantize.conversions import check_fully_integral

    pins = prepared.imported.pins  # the artifacts refuse values they were not specialised to
    guarded = guard_pins(final, pins)
    compiled = compile_traced(guarded, target)
    ops = classify(artifact_ops(guarded, compiled.lowering))
    if qconfig.partition_conversions == "fully_integral":
        check_fully_integral(ops, realized.realizer.float_reasons)
    artifact = export(compiled.executable, out_dir / "model.so")
    float_artifact = export(
        compile_module(guard_pins(prepared.mod, pins), target), out_dir / "float_model.so"
    )
    return _Built(artifact, float_artifact, compiled, ops)


def _verify(
    prepared: _Prepared,
    annotation: Annotation,
    realized: _Realized,
    cal: CalibrationResult,
    built: _Built,
    qconfig: QConfig,
    run: Runner,
    model_path: Path,
    found: Found | None = None,
) -> dict[str, Any]:
    """The report's sections: speed (first: it also warms the library up), then accuracy and the
    kernel times from instrumented runs of the artifact, integrality from its kernels; with a
    search, its section with the built winner's own metric."""
    from worker.build import load_vm
    from worker.frontend import CalibrationSet
    from worker.quantize.realize import probe_module
    from worker.report import verify
    from worker.report.performance import bench_artifacts, constant_bytes
    from worker.report.trace import TracedArtifact

    imported, realizer, ops = prepared.imported, realized.realizer, built.ops
    # the report's evaluation inputs: validation or held-out samples, else the calibration samples,
    # else (no data at all, global_scale) synthetic ones
    evaluation, source = prepared.evaluation()
    evaluation = evaluation or CalibrationSet.synthetic(imported.inputs, imported.shapes)
    evals = list(evaluation.feeds(limit=_EVAL_FEEDS))
    performance = bench_artifacts(
        built.float_artifact,
        built.artifact,
        model_path,
        evals[0],
        qconfig.bench_runs,
        weight_bytes_float=constant_bytes(prepared.mod),
        weight_bytes_quantized=constant_bytes(realized.mod),
    )
    plan = None
    if realizer.layers and not qconfig.do_simulation:
        points = annotation.points
        probes = cal.probes or [(run(probe_module(prepared.graph, qconfig, points)), points)]
        plan = verify.layer_plan(prepared.graph, points, realizer, ops, probes)
    traced = TracedArtifact(load_vm(built.artifact), {op.name for op in ops})
    accuracy = verify.accuracy(
        load_vm(built.float_artifact),
        traced,
        ops,
        evals,
        evaluation.batch,
        imported.output_names,
        source != "calibration",
        plan,
    )
    if performance.speedup < 1:
        performance = performance.model_copy(update={"hotspots": verify.hotspots(traced, ops)})
    nbits = {
        "input": qconfig.nbit_input,
        "activation": qconfig.nbit_activation,
        "weight": qconfig.nbit_weight,
    }
    sections = {
        "integrality": verify.integrality(
            ops, realizer.float_reasons, verify.table_ops(prepared.graph, realizer)
        ),
        "accuracy": accuracy,
        "performance": performance,
        "calibration": verify.calibration_section(
            cal.method, cal.samples, cal.batches, cal.table, nbits, realizer.weight_log
        ),
    }
    if found is not None:
        sections["search"] = found.section(found.score_artifact(traced.vm), performance.quantized.median_ms)
    return sections


def _model_info(name: str, prepared: _Prepared) -> ModelInfo:
    """The report header: the model's file name, and its inputs and outputs as built."""
    from tvm import relax

    from worker.report.schema import ModelInfo, TensorSpec

    imported = prepared.imported
    inputs = [
        TensorSpec(name=i.name, shape=list(imported.shapes[i.name]), dtype=str(i.dtype))
        for i in imported.inputs
    ]
    ret = prepared.mod["main"].ret_ty
    returned = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    outputs = [
        TensorSpec(name=n, shape=[int(d) for d in ty.shape], dtype=str(ty.dtype))
        for n, ty in zip(imported.output_names, returned, strict=True)
    ]
    return ModelInfo(file=name, inputs=inputs, outputs=outputs)


def _provenance(
    model_path: Path,
    calibration_path: Path | None,
    built: _Built,
    qconfig: QConfig,
    target_spec: dict[str, Any],
    target: tvm.target.Target,
    stages: _Stages,
    pins: list[Pin],
) -> Provenance:
    from tvm import __version__ as tvm_version

    from worker.build import faster_native_isa, int8_isa
    from worker.report.schema import Provenance, Specialization

    return Provenance(
        model_sha256=_sha256(model_path),
        calibration_sha256=_sha256(calibration_path),
        artifact_sha256=_sha256(built.artifact),
        qconfig=qconfig.model_dump(mode="json"),
        tvm_version=str(tvm_version),
        target=target_spec,
        isa=int8_isa(target) if built.compiled.pipeline == "tvmq" else None,
        native_isa=faster_native_isa(target),
        pipeline=built.compiled.pipeline,
        pipeline_fallback=built.compiled.fallback_reason,
        stage_seconds=stages.seconds,
        created_at=datetime.now(UTC),
        tvmq_version=_version(),
        specialized_inputs=[
            Specialization(input=p.input, value=p.value, branches=list(p.branches)) for p in pins
        ],
    )


def _write_report(
    info: ModelInfo, sections: dict[str, Any], provenance: Provenance, qconfig: QConfig, out_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """report.json and report.html; the summary is derived from the sections."""
    from worker.report.html import render_report_html
    from worker.report.schema import Report, Summary

    summary = Summary.from_sections(
        sections["integrality"],
        sections["accuracy"],
        sections["performance"],
        qconfig.calibrate_mode,
        qconfig.do_simulation,
    )
    data = Report(model=info, summary=summary, provenance=provenance, **sections).model_dump(mode="json")
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(data, indent=2))
    (out_dir / "report.html").write_text(render_report_html(data))
    return report_path, data


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tvmq")
    except PackageNotFoundError:
        return "0+unknown"
