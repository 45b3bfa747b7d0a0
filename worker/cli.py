"""`tvmq`: one command line for the whole product.

`tvmq quantize` runs the pipeline in-process (no broker: the embedded default); `tvmq serve` brings
up redis + workers + API on one machine; `tvmq worker` and `tvmq api` run one part each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from worker.errors import QuantizeError


def _stderr_progress() -> Callable[..., None]:
    """One line per stage; inside a long stage (calibration) a line per 10 percent at most; one line
    per search trial."""
    start = time.monotonic()
    last: list[object] = [None, -100]

    def report(stage: str, percent: int, detail: dict | None = None) -> None:
        if detail is not None:
            mark = "meets the target" if detail["meets"] else "misses"
            trial = f"trial {detail['trial']} of {detail['of']} ({detail['phase']})"
            print(
                f"[{time.monotonic() - start:7.1f}s] {percent:3d}% {stage} {trial}: {detail['metric']:.4g}, "
                f"{mark}; best {detail['best']:.4g}",
                file=sys.stderr,
                flush=True,
            )
            return
        if stage == last[0] and percent - last[1] < 10:
            return
        last[:] = [stage, percent]
        print(f"[{time.monotonic() - start:7.1f}s] {percent:3d}% {stage}", file=sys.stderr, flush=True)

    return report


def _cmd_quantize(args: argparse.Namespace) -> int:
    from worker.pipeline import run_pipeline
    from worker.qconfig import parse_qconfig

    overrides = {}
    if args.target:
        overrides["target"] = json.loads(args.target) if args.target.lstrip().startswith("{") else args.target
    try:
        text = Path(args.qconfig).read_text() if args.qconfig else None
        base = parse_qconfig(text).model_dump(exclude_unset=True) if text else {}
        qconfig = parse_qconfig({**base, **overrides})
        result = run_pipeline(
            Path(args.model),
            Path(args.calibration) if args.calibration else None,
            qconfig,
            Path(args.out),
            progress=_stderr_progress(),
            validation_path=Path(args.validation) if args.validation else None,
        )
    except QuantizeError as exc:
        print(exc.one_line(), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error[E_IO]: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: one line for the user, the traceback on request
        if os.environ.get("TVMQ_DEBUG"):
            raise
        print(
            f"error[E_INTERNAL]: {type(exc).__name__}: {exc} (rerun with TVMQ_DEBUG=1 for the traceback "
            "and please report it)",
            file=sys.stderr,
        )
        return 3
    summary = dict(result.report.get("summary", {}))
    if (found := result.report.get("search")) is not None:
        winner = found["trials"][found["winner"]]
        summary["search"] = {
            "verdict": found["verdict"],
            "trials": len(found["trials"]),
            "metric": found["built_metric"],
            "float_layers": winner["delta"].get("skip_layers", []),
            "why": found["why"],
        }
    print(json.dumps({"artifact": str(result.artifact), "report": str(result.report_path), **summary}))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from worker.runtime.stack import run_serve

    return run_serve(host=args.host, port=args.port, workers=args.workers)


def _cmd_worker(args: argparse.Namespace) -> int:
    from worker.runtime.stack import run_worker

    return run_worker(concurrency=args.concurrency, loglevel=args.loglevel)


def _cmd_api(args: argparse.Namespace) -> int:
    from worker.runtime.stack import run_api

    return run_api(host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvmq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="quantize and build an ONNX model in-process")
    q.add_argument("model", help="the .onnx model")
    q.add_argument(
        "--calibration", "-c", help=".npz: input name -> N stacked samples, or '<k>/<input name>' -> feed k"
    )
    q.add_argument("--qconfig", "-q", help="qconfig JSON file (default: tvmq's defaults)")
    q.add_argument(
        "--validation",
        help=".npz like the calibration data: the samples a search scores and the report evaluates "
        "(default: the held-out calibration samples)",
    )
    q.add_argument("--target", help='overrides the qconfig target: "llvm -mcpu=znver3" or a JSON dict')
    q.add_argument("--out", "-o", default="out", help="output directory (default: out/)")
    q.set_defaults(func=_cmd_quantize)

    s = sub.add_parser("serve", help="run redis + workers + API on this machine")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="number of Celery worker processes")
    s.set_defaults(func=_cmd_serve)

    w = sub.add_parser("worker", help="run one Celery worker (uses REDIS_URL)")
    w.add_argument("--concurrency", type=int, default=1)
    w.add_argument("--loglevel", default="info")
    w.set_defaults(func=_cmd_worker)

    a = sub.add_parser("api", help="run the HTTP API (uses REDIS_URL)")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8000)
    a.set_defaults(func=_cmd_api)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
