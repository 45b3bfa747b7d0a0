"""One corpus model through every engine, in one process: `python -m bench.realmodels.runner ...`.

The parent starts one of these per model (so a crash loses one model's remaining figures, not the
run) and reads RESULT.json, which is rewritten after every engine; `current` names the engine in
flight, so a crash or a timeout can be blamed on it. Every latency of a model is taken here, in the
same process, with the same thread count (TVM_NUM_THREADS is set by the parent before TVM starts),
after every engine is built: the engines then take turns on the same feed (bench.timing), so load
on a shared machine hits them alike and their ratios stay comparable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.realmodels import engines, machine, metrics, qconfigs
from bench.realmodels.corpus import CaseResult, CorpusModel, Runner
from bench.realmodels.engines import Outcome
from bench.realmodels.feeds import Feed, write_calibration
from bench.realmodels.registry import MODELS
from bench.timing import interleaved_ms

LATENCY_ROUNDS, LATENCY_RUNS = 3, 5
#: the engine name of tvmq's own float build (float_model.so of the first tvmq qconfig built)
TVMQ_FLOAT = "tvmq_float"


def onnx_inputs(path: Path) -> list[str]:
    """The model's inputs in ONNX order (the artifact contract's argument order)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [i.name for i in graph.input if i.name not in weights]


class ModelRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.result: dict[str, Any] = {"model": args.model, "engines": {}, "current": "setup"}
        self.cases: list[Any] = []
        self.reference: list[CaseResult] = []
        self.timing_feed: Feed = {}
        self.runners: dict[str, Runner] = {}

    def save(self) -> None:
        path = self.work / "RESULT.json"
        path.with_suffix(".part").write_text(json.dumps(self.result, indent=1, default=float))
        path.with_suffix(".part").replace(path)

    def start(self, step: str) -> None:
        self.result["current"] = step
        self.save()
        print(f"  {self.args.model}: {step}  (load {machine.load_average()[0]})", file=sys.stderr, flush=True)

    def evaluate(self, model: CorpusModel, run: Runner) -> dict[str, Any]:
        """Task metric and cosine against fp32 on the evaluation cases, then the latency."""
        got = [model.run_case(run, case) for case in self.cases]
        score = model.score([r.decoded for r in self.reference], [g.decoded for g in got])
        return {
            "metric": score.metric,
            "value": score.value,
            "text": score.text,
            "extra": score.extra,
            "cosine": metrics.cosine([r.raw for r in self.reference], [g.raw for g in got]),
        }

    def time_engines(self) -> None:
        """Latency of every engine that runs, taking turns (wall and CPU ms, median of rounds)."""
        self.start("latency")
        feed = self.timing_feed
        wall, cpu = interleaved_ms(
            {name: (lambda run=run: run(feed)) for name, run in self.runners.items()},
            LATENCY_ROUNDS,
            LATENCY_RUNS,
        )
        load = machine.load_average()
        for name in self.runners:
            self.result["engines"][name].update(
                latency_ms=round(wall[name], 3), cpu_ms=round(cpu[name], 3), load_average=load
            )
        self.save()

    def engine(
        self, name: str, make: Callable[[], tuple[Outcome, Runner | None]], model: CorpusModel
    ) -> None:
        """One engine: make its runner (an Outcome plus a Runner, or raise), evaluate, record.
        A failure after the build keeps the build's figures beside the error."""
        self.start(name)
        entry: dict[str, Any] = {}
        try:
            outcome, run = make()
            entry = outcome.to_json()
            if outcome.ok and run is not None:
                self.start(f"{name}: evaluation")
                entry.update(self.evaluate(model, run))
                self.runners[name] = run
        except Exception as exc:  # an engine's failure is its result; the other engines still run
            where = "evaluation: " if entry else ""
            entry.update(
                code="exception", message=f"{where}{type(exc).__name__}: {exc}", trace=traceback.format_exc()
            )
        self.result["engines"][name] = entry
        self.save()

    def run(self) -> None:
        args = self.args
        model = MODELS[args.model]()
        self.start("fetch")
        onnx_path = model.onnx_path()
        self.result["wheel"] = model.wheel.requirement
        self.result["onnx"] = model.onnx_member
        self.result["summary"] = model.summary
        self.start("inputs")
        fp32 = engines.ort_runner(onnx_path, args.threads)
        t0 = time.perf_counter()
        self.cases = model.evaluation_cases(args.samples)
        calibration = model.calibration_feeds(args.samples, fp32)
        self.timing_feed = calibration[0]
        calib_path = write_calibration(
            self.work / "calibration.npz", calibration, model.per_sample_calibration
        )
        self.result["inputs"] = {
            "evaluation": len(self.cases),
            "calibration": len(calibration),
            "calibration_layout": "per-sample" if model.per_sample_calibration else "batch-stacked",
            "seconds": round(time.perf_counter() - t0, 1),
        }
        self.start("ort_fp32")
        self.reference = [model.run_case(fp32, case) for case in self.cases]
        self.result["engines"]["ort_fp32"] = {"code": "ok"}
        self.runners["ort_fp32"] = fp32
        self.save()
        input_names = onnx_inputs(onnx_path)
        ort_int8 = (
            () if args.no_ort_int8 else ((False, "ort_int8_per_tensor"), (True, "ort_int8_per_channel"))
        )
        for per_channel, name in ort_int8:
            dst = self.work / f"{name}.onnx"

            def make_ort(per_channel: bool = per_channel, dst: Path = dst):
                outcome = engines.ort_quantize(onnx_path, dst, calib_path, per_channel, args.ort_timeout)
                return outcome, engines.ort_runner(dst, args.threads) if outcome.ok else None

            self.engine(name, make_ort, model)
        for qname, given in json.loads(args.qconfigs):
            out = self.work / f"tvmq_{qname}"
            qconfig = qconfigs.for_model(given, model.search_metric)

            def make_tvmq(qconfig: dict = qconfig, out: Path = out):
                outcome = engines.tvmq_quantize(onnx_path, calib_path, qconfig, out, args.tvmq_timeout)
                return outcome, engines.tvm_runner(out / "model.so", input_names) if outcome.ok else None

            self.engine(f"tvmq:{qname}", make_tvmq, model)
            if (out / "float_model.so").exists() and TVMQ_FLOAT not in self.result["engines"]:
                # the float build tvmq quantize made as its baseline: the "never slower than our
                # float build" figure, timed beside the others (one per model: it is the same
                # model whatever the qconfig)
                self.engine(
                    TVMQ_FLOAT,
                    lambda out=out: (
                        engines.Outcome("ok", info={"from": out.name}),
                        engines.tvm_runner(out / "float_model.so", input_names),
                    ),
                    model,
                )
        self.time_engines()
        self.result["current"] = None
        self.save()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--qconfigs", required=True, help="JSON list of [name, qconfig]")
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--tvmq-timeout", type=float, required=True)
    parser.add_argument("--ort-timeout", type=float, required=True)
    parser.add_argument("--no-ort-int8", action="store_true")
    args = parser.parse_args()
    engines.end_children_on_sigterm()
    run = ModelRun(args)
    try:
        run.run()
    except Exception as exc:  # fetch or input failure: the model's row says why
        run.result["error"] = f"{type(exc).__name__}: {exc}"
        run.result["trace"] = traceback.format_exc()
        run.save()
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
