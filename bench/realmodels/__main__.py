"""`python -m bench.realmodels`: the real-model corpus, fp32 vs ORT int8 vs tvmq, in one table.

Usage: .venv/bin/python -m bench.realmodels [--models a b] [--qconfigs defaults max ...] [--samples N]
       [--threads 1] [--out bench/realmodels/RESULTS.md] [--json build/realmodels/results.json]

Each model runs in its own child process (bench.realmodels.runner) under a time bound; a model that
fails to fetch, or crashes ORT or tvmq, becomes a row with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench.realmodels import engines, machine, qconfigs, report
from bench.realmodels.corpus import MAX_CASES
from bench.realmodels.registry import MODELS
from bench.realmodels.wheels import CACHE, ROOT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.realmodels", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--qconfigs",
        nargs="+",
        default=list(qconfigs.DEFAULT_SELECTION),
        help=f"presets ({', '.join(qconfigs.PRESETS)}) or NAME=JSON or NAME=path.json",
    )
    parser.add_argument(
        "--samples", type=int, default=24, help="evaluation inputs per model (as many calibrate)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "realmodels" / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=CACHE / "results.json")
    parser.add_argument("--tvmq-timeout", type=float, default=1200.0, help="seconds per tvmq quantize")
    parser.add_argument("--ort-timeout", type=float, default=600.0, help="seconds per ORT quantize_static")
    parser.add_argument("--work", type=Path, default=CACHE / "runs")
    parser.add_argument("--no-ort-int8", action="store_true", help="skip ORT's int8 (the CI test does)")
    parser.add_argument(
        "--from-json", type=Path, help="only render --out again from the results JSON of an earlier run"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.samples <= MAX_CASES:
        parser.error(f"--samples must be in 1..{MAX_CASES}")
    try:
        args.qconfig_list = [qconfigs.parse(spec) for spec in args.qconfigs]
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    return args


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One model in a child process; what it wrote survives its crash or its timeout."""
    work = args.work / name
    result_path = work / "RESULT.json"
    result_path.unlink(missing_ok=True)
    bound = args.tvmq_timeout * len(args.qconfig_list) + 2 * args.ort_timeout + 900  # + fetch, inputs
    options = {
        "--model": name,
        "--qconfigs": json.dumps(args.qconfig_list),
        "--samples": args.samples,
        "--threads": args.threads,
        "--work": work,
        "--tvmq-timeout": args.tvmq_timeout,
        "--ort-timeout": args.ort_timeout,
    }
    cmd = [sys.executable, "-m", "bench.realmodels.runner", *(str(x) for kv in options.items() for x in kv)]
    cmd += ["--no-ort-int8"] if args.no_ort_int8 else []
    env = {**os.environ, "TVM_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    code, _, _, seconds = engines.run_child(cmd, bound, env, capture=False)
    result = json.loads(result_path.read_text()) if result_path.exists() else {"model": name, "engines": {}}
    result["seconds"] = seconds
    if code != 0 and "error" not in result:
        current = result.get("current") or "setup"
        why = "timed out" if code is None else f"exited {code}"
        result["error"] = f"model process {why} during {current}"
        if current.startswith(("ort_", "tvmq:")):  # blame the engine in flight, keep the others
            engine = current.split(": ")[0]
            result["engines"].setdefault(engine, {"code": "crash", "message": result["error"]})
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_json:
        run = json.loads(args.from_json.read_text())
        args.out.write_text(report.markdown(run))
        print(report.table(run["results"], [n for n, _ in run["qconfigs"]]))
        return
    started = time.perf_counter()
    run: dict[str, Any] = {
        "command": "python -m bench.realmodels " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine.describe(),
        "qconfigs": args.qconfig_list,
        "samples": args.samples,
        "threads": args.threads,
        "results": [],
    }
    print(f"machine: {run['machine']}", file=sys.stderr, flush=True)
    for name in args.models:
        print(f"[{time.perf_counter() - started:6.0f}s] {name} ...", file=sys.stderr, flush=True)
        run["results"].append(run_model(name, args))
        write(run, args, started, final=name == args.models[-1])
    print(report.table(run["results"], [n for n, _ in args.qconfig_list]))
    print(f"\nwrote {args.out} and {args.json} ({run['seconds'] / 60:.1f} min)", file=sys.stderr)
    broken = [r["model"] for r in run["results"] if "error" in r and not r.get("engines")]
    if broken:  # an engine's failure is a figure; a model process that never got to one is the harness's
        sys.exit(f"no engine ran for {', '.join(broken)}: see the log above")


def write(run: dict[str, Any], args: argparse.Namespace, started: float, final: bool) -> None:
    """RESULTS.md and the JSON after every model: an interrupted run still leaves its table."""
    run["seconds"] = round(time.perf_counter() - started, 1)
    run["load_average_end"] = machine.load_average()
    run["complete"] = final
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.markdown(run))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(run, indent=1, default=float))


if __name__ == "__main__":
    main()
