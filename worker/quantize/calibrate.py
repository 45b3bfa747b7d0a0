"""Calibrate: run the float model over the calibration data and choose a threshold per tensor.

Statistics stream batch by batch (the collectors keep fixed-size state), so memory does not grow
with the number of samples. `calibrate_chunk_by` bounds how many intermediate tensors one probe
run returns (Relay's meaning): more chunks = more passes over the data, less memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import tvm
from tvm import relax

from worker.errors import QConfigError
from worker.qconfig import QConfig
from worker.quantize.annotate import Annotation
from worker.quantize.calibration import Choice, Collector, make_collector
from worker.quantize.graph import Graph, labels
from worker.quantize.realize import probe_module

#: Builds a module for the job's target and loads it (the pipeline's build.compile_and_load).
Runner = Callable[[tvm.IRModule], relax.VirtualMachine]

if TYPE_CHECKING:
    from worker.frontend import CalibrationSet

#: How one tensor's threshold is chosen: (calibrate_mode, percentile); the percentile matters only
#: in percentile mode. The search collects several at once to compare them without another pass.
Variant = tuple[str, float]


@dataclass
class CalibrationResult:
    thresholds: dict[relax.Expr, float]
    method: str
    samples: int = 0
    batches: int = 0
    #: per point: (name, kind, bits it is quantized to, the collector's choice)
    table: list[tuple[str, str, int, Choice]] = field(default_factory=list)
    #: per requested variant, every point's choice under it (calibrate(..., variants=...))
    alternatives: dict[Variant, dict[relax.Expr, Choice]] = field(default_factory=dict)
    #: the float probes that were run, with the points each returns: verify runs them again on its
    #: own samples for the per-layer figures instead of building them again
    probes: list[tuple[relax.VirtualMachine, list[relax.Expr]]] = field(default_factory=list)


def _update(work: list[tuple[Collector, np.ndarray]]) -> None:
    for collector, array in work:
        collector.update(array)


def _chunks(points: list[relax.Expr], size: int) -> list[list[relax.Expr]]:
    if size <= 0:
        return [points] if points else []
    return [points[i : i + size] for i in range(0, len(points), size)]


def point_bits(annotation: Annotation, qconfig: QConfig) -> dict[relax.Expr, int]:
    """The bit width each calibration point is quantized to. Activations are requantized to
    nbit_activation; with 32 the only calibrated outputs are lookup tables, whose outputs are
    nbit_input integers."""
    activation_bits = qconfig.nbit_activation if qconfig.nbit_activation < 32 else qconfig.nbit_input
    return {
        p: qconfig.nbit_input if annotation.kinds[p] == "input" else activation_bits
        for p in annotation.points
    }


def calibrate(
    graph: Graph,
    annotation: Annotation,
    calibration: CalibrationSet | None,
    qconfig: QConfig,
    run: Runner,
    progress: Callable[[float], None] = lambda fraction: None,
    variants: Sequence[Variant] = (),
) -> CalibrationResult:
    mode = qconfig.calibrate_mode
    points = annotation.points
    names = labels(graph)
    modes = _point_modes(points, names, qconfig)
    nbits = point_bits(annotation, qconfig)

    def collector(p: relax.Expr, variant: Variant) -> Collector:
        # Model inputs are often discrete (images in k/255 steps, one-hot, masks): an entropy search
        # over a histogram of a few spikes clips real signal, so kl_divergence takes their max.
        kind, percentile = variant
        return make_collector(
            "max" if kind == "kl_divergence" and p in graph.params else kind,
            percentile=percentile,
            nbit=nbits[p],
            global_scale=qconfig.global_scale,
        )

    own: dict[tuple[relax.Expr, Variant | None], Collector] = {
        (p, None): collector(p, (modes[p], qconfig.percentile)) for p in points
    }
    extra = {(p, v): collector(p, v) for v in variants for p in points}
    collectors = {**own, **extra}
    result = CalibrationResult(thresholds={}, method=mode)
    if mode == "global_scale" or calibration is None:
        for c in collectors.values():
            c.update(np.zeros(1, np.float32))
    else:
        param_index = {p: i for i, p in enumerate(graph.params)}
        inner = [p for p in points if p not in param_index]
        chunks = _chunks(inner, qconfig.calibrate_chunk_by) or [[]]
        total = len(chunks)
        steps = calibration.feed_count(qconfig.calibration_batches)
        by_point = _by_point(collectors)
        for done, chunk in enumerate(chunks):
            vm = run(probe_module(graph, qconfig, chunk)) if chunk else None
            if vm is not None:
                result.probes.append((vm, chunk))
            inputs_seen = {p: i for p, i in param_index.items() if p in points} if done == 0 else {}
            seen = 0
            # statistics of batch k are folded in on a second thread while the model runs batch k+1
            # (numpy releases the GIL); one update task at a time keeps each collector sequential
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending: Future | None = None
                for inputs in calibration.feeds(qconfig.calibration_batches):
                    work = [(c, inputs[i]) for p, i in inputs_seen.items() for c in by_point[p]]
                    if vm is not None:
                        outs = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
                        work += [
                            (c, array)
                            for p, out in zip(chunk, outs, strict=True)
                            for array in [out.numpy()]
                            for c in by_point[p]
                        ]
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(_update, work)
                    seen += 1
                    progress((done + seen / steps) / total)
                if pending is not None:
                    pending.result()
            result.batches, result.samples = seen, seen * calibration.batch
    for p in points:
        choice = own[p, None].choice()
        result.thresholds[p] = choice.threshold
        result.table.append((names[p], annotation.kinds[p], nbits[p], choice))
    for v in variants:
        result.alternatives[v] = {p: extra[p, v].choice() for p in points}
    return result


def _point_modes(points: list[relax.Expr], names: dict[relax.Expr, str], qconfig: QConfig) -> dict:
    """Each point's calibrate_mode: the qconfig's, or its tensor_calibrate_mode override."""
    overrides = qconfig.tensor_calibrate_mode
    unknown = sorted(set(overrides) - set(names.values()))
    if unknown:
        raise QConfigError(
            f"tensor_calibrate_mode names {unknown}, which this model does not have (tensor labels as "
            "the report's calibration section names them)",
            field="tensor_calibrate_mode",
        )
    return {p: overrides.get(names[p], qconfig.calibrate_mode) for p in points}


def _by_point(collectors: dict[tuple[relax.Expr, Variant | None], Collector]) -> dict:
    out: dict[relax.Expr, list[Collector]] = {}
    for (p, _), c in collectors.items():
        out.setdefault(p, []).append(c)
    return out
