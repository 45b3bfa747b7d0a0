"""The search strategy: the most integral, fastest config that meets the accuracy target.

1. single configs: the user's qconfig, then each other calibrate mode, percentile value and weight
   granularity the knobs allow; the first that meets the target ends the search.
2. per-tensor modes: each tensor takes the variant whose expected error (on its calibration
   histogram) is the lowest.
3. fallback: layers ranked by their SQNR alone (one sensitivity run), the most sensitive kept float
   first: 1, 2, 4, ... of them until the target holds, then bisection to the fewest.
4. bring back: each fallen-back layer is quantized again if the target still holds without it.
5. speed: 7-bit weights, where the int8 kernels run them faster (AVX2's int16 pairs).
With `fully_integral` the fewest float layers found must all sit at an edge of the integer core
(every layer before one, or every layer after it, float too); otherwise the target is unreachable
while integral, the verdict names the interior layers it needs float, and the best integral trial
is built. Every phase is bounded, so the search ends: with the winner, or with a verdict naming
the layers that block the target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from tvm import relax

from worker.quantize.graph import Graph, Node, labels
from worker.search import metrics
from worker.search.trials import Config, Stop, Trial, Trials, variant_of

#: percentile values the `percentile` knob tries besides the qconfig's own
PERCENTILES = (99.99, 99.9)
MODES = ("max", "percentile", "kl_divergence", "mse")
#: layers a verdict names as blocking the target (the most sensitive first)
BLOCKING_SHOWN = 5

Verdict = Literal["met", "missed", "unreachable_integral"]


@dataclass
class Outcome:
    winner: Trial
    verdict: Verdict
    why: str
    blocking: list[str] = field(default_factory=list)
    #: (layer label, SQNR alone in dB), most sensitive first; empty when no fallback was needed
    sensitivity: list[tuple[str, float]] = field(default_factory=list)
    stopped: str | None = None


def variants(base: Config, knobs: Sequence[str]) -> list[tuple[str, float]]:
    """Every (mode, percentile) the search may use: what calibration collects in its one pass."""
    modes = MODES if "calibrate_mode" in knobs else (base.calibrate_mode,)
    out = {variant_of(m, base.percentile) for m in modes}
    if "percentile" in knobs:
        out |= {("percentile", p) for p in (base.percentile, *PERCENTILES)}
    out |= {variant_of(mode, base.percentile) for _, mode in base.tensor_modes}
    out.add(variant_of(base.calibrate_mode, base.percentile))
    return sorted(out)


class _Search:
    def __init__(
        self, trials: Trials, knobs: Sequence[str], narrow_faster: bool, fully_integral: bool
    ) -> None:
        self.trials = trials
        self.knobs = set(knobs)
        self.narrow_faster = narrow_faster
        self.fully_integral = fully_integral
        self.graph = trials.graph
        self.names = labels(trials.graph)
        self.base = Config.of(trials.base)
        #: the preferred trial that meets the target (fewest float layers), integral or not
        self.minimal: Trial | None = None
        self.ranking: list[tuple[Node, float]] = []
        self.tried: dict[Config, Trial] = {}

    def run(self) -> Outcome:
        stopped = None
        try:
            current = self.singles()
            if self.minimal is None and "tensor_calibrate_mode" in self.knobs:
                current = self.per_tensor(current)
            if self.minimal is None and "fallback" in self.knobs:
                self.fallback(current)
            if self.minimal is not None and self.minimal.config.float_layers:
                self.bring_back()
            if self.minimal is not None and self.narrow_faster and "weight_bits" in self.knobs:
                self.narrow()
        except Stop as stop:
            stopped = stop.why
        return self.outcome(stopped)

    # -- phases ----------------------------------------------------------------------------------
    def _try(self, config: Config, phase: str) -> Trial:
        """Score a config once (a phase may reach one an earlier phase tried); the user's own
        config is always scored, whatever the budget, so there is always a trial to build."""
        if config in self.tried:
            return self.tried[config]
        trial = self.trials.evaluate(config, phase, budget=bool(self.tried))
        self.tried[config] = trial
        if trial.meets and (self.minimal is None or _preferred(trial, self.minimal)):
            self.minimal = trial
        return trial

    def singles(self) -> Trial:
        base = self.base
        configs = [base]
        if "calibrate_mode" in self.knobs:
            configs += [base.with_(calibrate_mode=m) for m in MODES if m != base.calibrate_mode]
        if "percentile" in self.knobs:
            configs += [
                base.with_(calibrate_mode="percentile", percentile=p)
                for p in PERCENTILES
                if p != base.percentile
            ]
        if "per_channel" in self.knobs:
            configs.append(base.with_(per_channel=not base.per_channel))
        best = None
        for config in configs:
            trial = self._try(config, "single config")
            best = trial if best is None or trial.metric > best.metric else best
            if trial.meets:
                break
        return best

    def per_tensor(self, current: Trial) -> Trial:
        """Each tensor the variant of the lowest expected error, among those of this percentile."""
        config = current.config
        alternatives = self.trials.cal.alternatives
        candidates = [v for v in alternatives if v[0] != "percentile" or v[1] == config.percentile]
        modes = {}
        for p in self.trials.annotation.points:
            label = self.names[p]
            own = config.variant(label)
            best = min(candidates, key=lambda v: (_error(alternatives[v][p].mse_vs_max), v != own))
            if best != own:
                modes[label] = best[0]
        if not modes:
            return current
        merged = dict(config.tensor_modes) | modes
        if len(set(merged.values())) == 1 and len(merged) == len(self.trials.annotation.points):
            mixed = config.with_(calibrate_mode=next(iter(merged.values())), tensor_modes=())  # one mode
        else:
            mixed = config.with_(tensor_modes=tuple(sorted(merged.items())))
        trial = self._try(mixed, "per-tensor modes")
        return trial if trial.metric > current.metric else current

    def fallback(self, current: Trial) -> None:
        """The most sensitive layers float: 1, 2, 4, ... of them until the target holds, then
        bisection between the last count that missed and the first that met."""
        self.ranking = self.trials.sensitivity(current.config)
        ranked = [self.names[n.var] for n, _ in self.ranking]
        config, fixed = current.config, current.config.float_layers

        def meets(k: int) -> bool:
            return self._try(config.with_(float_layers=(*fixed, *ranked[:k])), "fallback").meets

        lo, hi, k = 0, None, 1
        while k <= len(ranked):
            if meets(k):
                hi = k
                break
            lo = k
            if k == len(ranked):
                break
            k = min(2 * k, len(ranked))
        while hi is not None and hi - lo > 1:
            mid = (lo + hi) // 2
            hi, lo = (mid, lo) if meets(mid) else (hi, mid)

    def bring_back(self) -> None:
        """Quantize again every fallen-back layer the target does not need, least sensitive first."""
        own = set(self.base.float_layers)
        for label in reversed(self.minimal.config.float_layers):
            if label not in own:
                rest = tuple(x for x in self.minimal.config.float_layers if x != label)
                self._try(self.minimal.config.with_(float_layers=rest), "bring back")

    def narrow(self) -> None:
        """7-bit weights keep every pair on the fast path of saturating kernels: faster, so a
        winner at 7 bits beats one at 8 that is otherwise the same."""
        if self.minimal.config.nbit_weight > 7:
            trial = self._try(self.minimal.config.with_(nbit_weight=7), "7-bit weights")
            if trial.meets and trial.float_layers == self.minimal.float_layers:
                self.minimal = trial

    # -- the end ---------------------------------------------------------------------------------
    def outcome(self, stopped: str | None) -> Outcome:
        spec = self.trials.spec
        target = metrics.target(spec)
        interior = self._interior(self.minimal) if self.fully_integral and self.minimal else []
        if self.minimal is not None and not interior:
            w = self.minimal
            why = (
                f"{spec.metric} {w.metric:.4g} meets the target {target:.4g} with "
                f"{w.float_layers} float layer(s) and {w.integer_mac_share:.1%} of the MACs in integers"
            )
            if stopped:
                why += f"; the search stopped early ({stopped})"
            return Outcome(w, "met", why, [], self._sensitivity(), stopped)
        if interior:
            best = self._best_integral()
            why = (
                f"the target {spec.metric} >= {target:.4g} is unreachable while fully integral: it needs "
                f"{', '.join(interior)} float, inside the integer core (fallback is allowed only where all "
                f"the layers before, or all after, are float); built instead: the best integral trial, "
                f"{spec.metric} {best.metric:.4g}"
            )
            return Outcome(best, "unreachable_integral", why, interior, self._sensitivity(), stopped)
        best = self.trials.best
        if not self.ranking:
            with contextlib.suppress(Stop):  # to name the blockers (not a trial); the clock bounds it
                self.ranking = self.trials.sensitivity(best.config)
        blocking = [label for label, _ in self._sensitivity() if label not in best.config.float_layers]
        blocking = blocking[:BLOCKING_SHOWN]
        why = (
            f"the target {spec.metric} >= {target:.4g} was not reached"
            + (f" ({stopped})" if stopped else "")
            + f": the best trial gives {best.metric:.4g}"
            + (f"; the most sensitive layers still quantized: {', '.join(blocking)}" if blocking else "")
        )
        return Outcome(best, "missed", why, blocking, self._sensitivity(), stopped)

    def _sensitivity(self) -> list[tuple[str, float]]:
        return [(self.names[n.var], round(s, 3)) for n, s in self.ranking]

    def _interior(self, trial: Trial) -> list[str]:
        """The trial's float layers that sit inside the integer core (its float set as a whole)."""
        edges = _Edges(self.graph, self.trials.sim.layout.layers, self.names)
        fallen = set(trial.config.float_layers)
        return [label for label in trial.config.float_layers if not edges.at_edge(label, fallen)]

    def _best_integral(self) -> Trial:
        integral = [t for t in self.trials.records if not self._interior(t)] or self.trials.records
        return max(integral, key=lambda t: (t.meets, t.metric))


def _preferred(a: Trial, b: Trial) -> bool:
    """Among trials that meet the target: fewer float layers, then more integer MACs."""
    return (a.float_layers, -a.integer_mac_share) < (b.float_layers, -b.integer_mac_share)


def _error(mse_vs_max: float | None) -> float:
    return 1.0 if mse_vs_max is None else mse_vs_max


class _Edges:
    """Which layers may fall back while the integer core stays one piece: those whose upstream
    layers, or whose downstream layers, are all float already."""

    def __init__(self, graph: Graph, layers: list[Node], names: dict) -> None:
        self.names = names
        layer_set = set(layers)
        upstream: dict[Node, set[Node]] = {}
        for node in graph.nodes:
            above: set[Node] = set()
            for producer in _producers(graph, node):
                above |= upstream.get(producer, set())
                if producer in layer_set:
                    above.add(producer)
            upstream[node] = above
        self.up = {names[n.var]: {names[u.var] for u in upstream[n]} for n in layers}
        self.down = {label: {x for x, ups in self.up.items() if label in ups} for label in self.up}

    def at_edge(self, label: str, fallen: set[str]) -> bool:
        return self.up.get(label, set()) <= fallen or self.down.get(label, set()) <= fallen


def _producers(graph: Graph, node: Node) -> list[Node]:
    """The nodes whose values `node` reads (through inline tuples)."""
    value = node.value
    if isinstance(value, relax.Call):
        exprs = list(value.args)
    elif isinstance(value, relax.Tuple):
        exprs = list(value.fields)
    elif isinstance(value, relax.TupleGetItem):
        exprs = [value.tuple_value]
    else:
        exprs = [value]
    flat = [f for e in exprs for f in (e.fields if isinstance(e, relax.Tuple) else [e])]
    return [p for f in flat if (p := graph.producer(f)) is not None]


def run_strategy(trials: Trials, knobs: Sequence[str], narrow_faster: bool, fully_integral: bool) -> Outcome:
    return _Search(trials, knobs, narrow_faster, fully_integral).run()
