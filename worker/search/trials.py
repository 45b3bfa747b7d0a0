"""One search trial: a config (what differs from the user's qconfig), scored on the simulation.

A trial's partition is the pipeline's own (partition + float safety, under the config's qconfig),
its thresholds come from the one calibration pass that collected every variant, and its metric is
the simulation's output against the float model's on the validation feeds. The budget (max_trials,
timeout_s) is checked before every trial and between the feeds of one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from tvm import relax

from worker.qconfig import QConfig, SearchConfig
from worker.quantize.annotate import Annotation
from worker.quantize.calibrate import CalibrationResult, Variant
from worker.quantize.graph import Graph, Node, labels, shape_of
from worker.quantize.ops import rule_for
from worker.quantize.partition import apply_float_safety, partition
from worker.search import metrics
from worker.search.simulate import Simulation


class Stop(Exception):
    """The budget is spent: the search ends with the best trial so far."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class Config:
    """A point of the search space, as the qconfig keys it sets."""

    calibrate_mode: str
    percentile: float
    per_channel: bool
    nbit_weight: int
    tensor_modes: tuple[tuple[str, str], ...] = ()
    float_layers: tuple[str, ...] = ()

    @classmethod
    def of(cls, qconfig: QConfig) -> Config:
        return cls(
            qconfig.calibrate_mode,
            qconfig.percentile,
            qconfig.per_channel,
            qconfig.nbit_weight,
            tuple(sorted(qconfig.tensor_calibrate_mode.items())),
            tuple(qconfig.skip_layers),
        )

    def with_(self, **changes: object) -> Config:
        return replace(self, **changes)

    def qconfig(self, base: QConfig) -> QConfig:
        """The user's qconfig with this config's keys, without the search block: what is built."""
        data = base.model_dump(exclude_unset=True)
        data.pop("search", None)
        data.update(self.keys())
        return QConfig.model_validate(data)

    def keys(self) -> dict[str, object]:
        return {
            "calibrate_mode": self.calibrate_mode,
            "percentile": self.percentile,
            "per_channel": self.per_channel,
            "nbit_weight": self.nbit_weight,
            "tensor_calibrate_mode": dict(self.tensor_modes),
            "skip_layers": list(self.float_layers),
        }

    def delta(self, base: Config) -> dict[str, object]:
        """The keys that differ from `base` (the user's qconfig): the report's config delta."""
        mine, theirs = self.keys(), base.keys()
        return {k: v for k, v in mine.items() if v != theirs[k]}

    def variant(self, label: str) -> Variant:
        return variant_of(dict(self.tensor_modes).get(label, self.calibrate_mode), self.percentile)


@dataclass
class Trial:
    index: int
    phase: str
    config: Config
    metric: float
    meets: bool
    integer_mac_share: float
    seconds: float
    quantized: set[Node] = field(repr=False, default_factory=set)

    @property
    def float_layers(self) -> int:
        return len(self.config.float_layers)


def variant_of(mode: str, percentile: float) -> Variant:
    return (mode, percentile) if mode == "percentile" else (mode, 0.0)


class Trials:
    """Runs configs on the simulation and keeps their records; raises Stop past the budget."""

    def __init__(
        self,
        spec: SearchConfig,
        base: QConfig,
        graph: Graph,
        annotation: Annotation,
        cal: CalibrationResult,
        sim: Simulation,
        feeds: Sequence[list[np.ndarray]],
        batch: int,
        output: int,
        on_trial: Callable[[Trial, Trial], None] = lambda trial, best: None,
    ) -> None:
        self.spec = spec
        self.base = base
        self.graph = graph
        self.annotation = annotation
        self.cal = cal
        self.sim = sim
        self.feeds = list(feeds)
        self.batch = batch
        self.output = output
        self.on_trial = on_trial
        self.deadline = time.monotonic() + spec.timeout_s
        self.names = labels(graph)
        self.records: list[Trial] = []
        self.best: Trial | None = None
        self.stopped: str | None = None
        no_quant = sim.params(set(), self.thresholds(Config.of(base)), base)
        self.reference = [sim.run(f, no_quant)[output] for f in self.feeds]
        self._macs = {n: _macs(n) for n in graph.nodes}
        self._total_macs = sum(self._macs.values())

    # -- the budget ------------------------------------------------------------------------------
    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise Stop(f"timeout_s={self.spec.timeout_s:g} reached")

    def _check_budget(self) -> None:
        if len(self.records) >= self.spec.max_trials:
            raise Stop(f"max_trials={self.spec.max_trials} reached")
        self.check_time()

    # -- a config's pieces -----------------------------------------------------------------------
    def thresholds(self, config: Config) -> dict[relax.Expr, float]:
        return {
            p: self.cal.alternatives[config.variant(self.names[p])][p].threshold
            for p in self.annotation.points
        }

    def quantized(self, config: Config, thresholds: dict[relax.Expr, float]) -> set[Node]:
        """The pipeline's partition for this config: its skipped layers, then the float safety."""
        parts = partition(self.graph, config.qconfig(self.base))
        apply_float_safety(self.graph, parts, thresholds)
        return set(parts.quantized)

    def integer_share(self, quantized: set[Node]) -> float:
        if not self._total_macs:
            return 1.0 if quantized else 0.0
        return sum(self._macs[n] for n in quantized) / self._total_macs

    # -- running ---------------------------------------------------------------------------------
    def evaluate(self, config: Config, phase: str, budget: bool = True) -> Trial:
        """Score one config; `budget` False (the user's own config, trial 0) runs it whatever the
        budget says, so a search always has a trial to build."""
        if budget:
            self._check_budget()
        started = time.monotonic()
        thresholds = self.thresholds(config)
        quantized = self.quantized(config, thresholds)
        params = self.sim.params(quantized, thresholds, config.qconfig(self.base))
        outs = []
        for feed in self.feeds:
            outs.append(self.sim.run(feed, params)[self.output])
            if budget:
                self.check_time()
        value = metrics.score(self.spec, self.reference, outs, self.batch)
        trial = Trial(
            index=len(self.records),
            phase=phase,
            config=config,
            metric=value,
            meets=metrics.meets(self.spec, value),
            integer_mac_share=self.integer_share(quantized),
            seconds=round(time.monotonic() - started, 3),
            quantized=quantized,
        )
        self.records.append(trial)
        if self.best is None or better(trial, self.best):
            self.best = trial
        self.on_trial(trial, self.best)
        return trial

    def sensitivity(self, config: Config) -> list[tuple[Node, float]]:
        """Every layer the config quantizes with its SQNR alone (fake-quantized operands and weights
        from the float model's values), most sensitive (lowest) first: one run per feed."""
        thresholds = self.thresholds(config)
        quantized = self.quantized(config, thresholds)
        params = self.sim.params(set(self.sim.layout.nodes), thresholds, config.qconfig(self.base))
        layers = self.sim.layout.layers
        power = np.zeros((len(layers), 2))
        for feed in self.feeds:
            power += self.sim.powers(feed, params)
            self.check_time()
        sqnr = [_db(signal, noise) for signal, noise in power]
        ranked = [(n, s) for n, s in zip(layers, sqnr, strict=True) if n in quantized]
        return sorted(ranked, key=lambda pair: pair[1])


def better(a: Trial, b: Trial) -> bool:
    """Whether trial a beats b: meeting the target first, then fewer float layers, more integer
    work and fewer trials (the earlier, simpler config), then the metric."""
    if a.meets != b.meets:
        return a.meets
    if a.meets:
        return (a.float_layers, -a.integer_mac_share, -a.metric) < (
            b.float_layers,
            -b.integer_mac_share,
            -b.metric,
        )
    return a.metric > b.metric


def _db(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return metrics.SQNR_CAP_DB
    if signal <= 0.0:
        return -metrics.SQNR_CAP_DB
    return float(np.clip(10.0 * np.log10(signal / noise), -metrics.SQNR_CAP_DB, metrics.SQNR_CAP_DB))


def _macs(node: Node) -> int:
    rule = rule_for(node.op)
    if rule is None or rule.macs is None:
        return 0
    return int(rule.macs(node.call, shape_of(node.var)))
