"""The accuracy-target search: the user names a metric and a tolerable loss, the search finds the
most integral, fastest config that meets it (issue 13).

The pipeline calls it as a stage between calibrate and realize: calibration has collected every
variant the knobs allow in one pass; the search builds one simulation (simulate.py), scores trials
on it (trials.py) as the strategy (strategy.py) asks, and hands back the winner's qconfig,
partition and thresholds, which the pipeline's own stages then realize and build for real.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tvm

from worker.errors import QConfigError
from worker.qconfig import QConfig, SearchConfig
from worker.quantize.annotate import Annotation, annotate
from worker.quantize.calibrate import CalibrationResult, Runner, point_bits
from worker.quantize.graph import Graph, labels
from worker.quantize.partition import apply_float_safety, partition
from worker.report.schema import Search, SearchLayer, SearchTrial
from worker.search import metrics
from worker.search.simulate import Simulation
from worker.search.strategy import Outcome, run_strategy, variants
from worker.search.trials import Config, Trial, Trials

if TYPE_CHECKING:
    from worker.frontend import CalibrationSet

__all__ = ["Found", "TrialProgress", "calibration_variants", "search"]

#: (trial number from 1, the trial budget, the trial, the best trial so far)
TrialProgress = Callable[[int, int, Trial, Trial], None]


def calibration_variants(qconfig: QConfig) -> list[tuple[str, float]]:
    """What calibration must collect for the search (every mode and percentile it may try)."""
    return variants(Config.of(qconfig), qconfig.search.knobs)


@dataclass
class Found:
    """The search's result: what the pipeline builds, and what the report says about it."""

    qconfig: QConfig
    annotation: Annotation
    calibration: CalibrationResult
    outcome: Outcome
    trials: Trials
    source: str
    output_name: str
    seconds: float

    def score_artifact(self, vm: tvm.relax.VirtualMachine) -> float:
        """The metric of the built artifact on the search's own feeds (the simulation's promise,
        checked on the real integers)."""
        outs = []
        for feed in self.trials.feeds:
            out = vm["main"](*[tvm.runtime.tensor(x) for x in feed])
            outs.append(_nth(out, self.trials.output))
        return metrics.score(self.trials.spec, self.trials.reference, outs, self.trials.batch)

    def section(self, built_metric: float | None, latency_ms: float | None) -> Search:
        spec, base = self.trials.spec, Config.of(self.trials.base)
        return Search(
            metric=spec.metric,
            target=metrics.target(spec),
            tolerable_loss=spec.tolerable_loss,
            loss=spec.loss,
            output=self.output_name,
            source=self.source,
            samples=len(self.trials.feeds) * self.trials.batch,
            knobs=list(spec.knobs),
            verdict=self.outcome.verdict,
            why=self.outcome.why,
            blocking=self.outcome.blocking,
            stopped=self.outcome.stopped,
            trials=[
                SearchTrial(
                    index=t.index,
                    phase=t.phase,
                    delta=t.config.delta(base),
                    metric=t.metric,
                    meets=t.meets,
                    float_layers=t.float_layers,
                    integer_mac_share=t.integer_mac_share,
                    seconds=t.seconds,
                )
                for t in self.trials.records
            ],
            winner=self.outcome.winner.index,
            winner_delta=self.outcome.winner.config.delta(base),
            built_metric=built_metric,
            built_meets=None if built_metric is None else metrics.meets(spec, built_metric),
            winner_latency_ms=latency_ms,
            sensitivity=[SearchLayer(name=n, sqnr_db=s) for n, s in self.outcome.sensitivity],
            seconds=self.seconds,
        )


def _nth(out: object, index: int) -> np.ndarray:
    if isinstance(out, tvm.runtime.Tensor):
        return out.numpy()
    return out[index].numpy()


def _output_index(spec: SearchConfig, output_names: list[str]) -> int:
    if isinstance(spec.output, int):
        if not 0 <= spec.output < len(output_names):
            raise QConfigError(
                f"search.output {spec.output} is not an output index (the model has {len(output_names)})",
                field="search.output",
            )
        return spec.output
    if spec.output not in output_names:
        raise QConfigError(
            f"search.output {spec.output!r} is not a model output (outputs: {output_names})",
            field="search.output",
        )
    return output_names.index(spec.output)


def search(
    graph: Graph,
    cal: CalibrationResult,
    qconfig: QConfig,
    feeds: CalibrationSet,
    source: str,
    output_names: list[str],
    run: Runner,
    narrow_faster: bool,
    progress: TrialProgress = lambda k, n, trial, best: None,
) -> Found:
    """Run the search on `feeds` and return the winner ready to realize."""
    started = time.monotonic()
    spec = qconfig.search
    output = _output_index(spec, output_names)
    # the partition before float safety: every node any trial may quantize
    annotation = annotate(graph, partition(graph, qconfig), qconfig)
    sim = Simulation(graph, annotation, qconfig, run)
    trials = Trials(
        spec,
        qconfig,
        graph,
        annotation,
        cal,
        sim,
        list(feeds.feeds(spec.max_feeds)),
        feeds.batch,
        output,
        on_trial=lambda trial, best: progress(trial.index + 1, spec.max_trials, trial, best),
    )
    fully_integral = qconfig.partition_conversions == "fully_integral"
    outcome = run_strategy(trials, spec.knobs, narrow_faster, fully_integral)
    winner = outcome.winner.config
    built = winner.qconfig(qconfig)
    chosen_annotation, chosen = _winner_calibration(graph, winner, built, cal)
    return Found(
        built,
        chosen_annotation,
        chosen,
        outcome,
        trials,
        source,
        output_names[output],
        round(time.monotonic() - started, 3),
    )


def _winner_calibration(
    graph: Graph, config: Config, qconfig: QConfig, cal: CalibrationResult
) -> tuple[Annotation, CalibrationResult]:
    """The winner's partition, annotation and thresholds as the calibrate stage would give them,
    read from the variants calibration already collected (no second pass over the data)."""
    names = labels(graph)
    annotation = annotate(graph, partition(graph, qconfig), qconfig)
    choices = {p: cal.alternatives[config.variant(names[p])][p] for p in annotation.points}
    thresholds = {p: c.threshold for p, c in choices.items()}
    apply_float_safety(graph, annotation.partition, thresholds)
    bits = point_bits(annotation, qconfig)
    table = [(names[p], annotation.kinds[p], bits[p], choices[p]) for p in annotation.points]
    result = CalibrationResult(thresholds, qconfig.calibrate_mode, cal.samples, cal.batches, table)
    return annotation, result


def describe(found: Found) -> dict[str, Any]:
    """One line of facts for the CLI summary."""
    outcome = found.outcome
    return {
        "search_verdict": outcome.verdict,
        "search_trials": len(found.trials.records),
        "search_metric": outcome.winner.metric,
        "search_float_layers": list(outcome.winner.config.float_layers),
    }
