"""Op-by-op time of one build: µs per kernel call and per kernel kind, from the Relax VM's instrument.

Usage: TVM_NUM_THREADS=1 .venv/bin/python -m bench.profile [--models resnet_cnn_224 ...]
       [--engines fp32 int8_w7 pipeline_w7] [--onnx path.onnx ...] [--runs 5]

TVM 0.27's VirtualMachine has no `profile=True`; `set_instrument` calls back before and after every
VM call, which is what this times, on the calling thread's CPU clock (`time.thread_time`: with
TVM_NUM_THREADS=1 the kernels run on that thread, and time the scheduler gives to other processes
on a shared machine is not counted; `--clock wall` for wall time). A few µs of Python per call
are included, the same for every engine, so the per-op overhead of many small kernels shows.
Kernels are grouped into
kinds by name with the fusion counter stripped (`fused_conv2d_add_relu`, `tvmq_avx2_u8s8_kernel`,
`vm.builtin.alloc_tensor`, ...). The per-call figure is the minimum over `--runs` runs: on a
shared machine a call that the scheduler pre-empts takes a whole time slice longer, which a median
of a few runs does not remove.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench import models

_COUNTER = re.compile(r"(_\d+)+$")


def kind(symbol: str) -> str:
    """A kernel's kind: its name without the counters FuseOps/our rewrite append."""
    return _COUNTER.sub("", symbol)


def profile(
    executable, feeds: list[np.ndarray], runs: int, clock=time.thread_time
) -> dict[str, tuple[str, int, float]]:
    """call-site key -> (symbol, calls per run, least µs of the call) over `runs` instrumented runs."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    args = [tvm.runtime.tensor(f) for f in feeds]
    per_run: list[dict[str, float]] = []
    symbols: dict[str, str] = {}
    counts: dict[str, int] = {}
    current: dict[str, float] = defaultdict(float)
    seen: dict[str, int] = defaultdict(int)
    starts: list[float] = []

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            starts.append(clock())
            return 0
        elapsed = clock() - starts.pop()
        key = f"{symbol}#{seen[symbol]}"
        seen[symbol] += 1
        symbols[key] = str(symbol)
        current[key] += elapsed * 1e6
        return 0

    vm["main"](*args)  # warm-up, uninstrumented
    vm.set_instrument(tvm.runtime.convert(instrument))
    for _ in range(runs):
        current.clear()
        seen.clear()
        vm["main"](*args)
        per_run.append(dict(current))
        counts = dict(seen)
    keys = per_run[-1].keys()
    return {k: (symbols[k], counts[symbols[k]], min(r.get(k, 0.0) for r in per_run)) for k in keys}


def _timed(fn, clock) -> float:
    t0 = clock()
    fn()
    return (clock() - t0) * 1e3


def by_kind(sites: dict[str, tuple[str, int, float]]) -> dict[str, tuple[int, float]]:
    """kind -> (calls per run, total µs per run)."""
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for symbol, _, us in sites.values():
        row = out[kind(symbol)]
        row[0] += 1
        row[1] += us
    return {k: (int(v[0]), v[1]) for k, v in sorted(out.items(), key=lambda kv: -kv[1][1])}


def print_profile(title: str, sites: dict[str, tuple[str, int, float]], top: int) -> None:
    kinds = by_kind(sites)
    total = sum(us for _, us in kinds.values())
    print(f"\n## {title}: {total / 1e3:.2f} ms in {sum(c for c, _ in kinds.values())} VM calls")
    print("| kind | calls | µs | share |\n|---|---|---|---|")
    for name, (calls, us) in kinds.items():
        print(f"| {name} | {calls} | {us:.0f} | {100 * us / total:.1f} % |")
    print(f"\ntop {top} calls:\n| call | µs |\n|---|---|")
    for key, (_, _, us) in sorted(sites.items(), key=lambda kv: -kv[1][2])[:top]:
        print(f"| {key} | {us:.0f} |")


def _builds(model: models.Model, engines: list[str], target, mcpu: str) -> dict:
    from tvm.relax.frontend.onnx import from_onnx

    from bench.run import _pipeline_artifact
    from worker.kernels import compile_module

    proto = models.to_onnx(model)
    out = {}
    for engine in engines:
        if engine == "fp32":
            out[engine] = lambda: compile_module(from_onnx(proto, keep_params_in_input=False), target)
        elif engine.startswith("int8_w"):
            bits = int(engine.removeprefix("int8_w"))
            out[engine] = lambda b=bits: compile_module(models.to_int8_relax(model, weight_bits=b), target)
        elif engine.startswith("pipeline_w"):
            bits = int(engine.removeprefix("pipeline_w"))
            out[engine] = lambda b=bits: _pipeline_artifact(model, proto, {"kind": "llvm", "mcpu": mcpu}, b)
        else:
            raise SystemExit(f"unknown engine {engine}")
    return out


def _onnx_fp32(path: Path, target, sizes: list[int]):
    """A real model's float build through the pipeline's own front door (dynamic dims: batch 1,
    the others from `sizes` in order), then our CPU pipeline; plus an ORT fp32 runner on the
    same simplified model and feeds."""
    from bench.run import _ort_session
    from worker import frontend
    from worker.kernels import compile_module

    model = frontend.load_onnx(path)
    rest = iter(sizes)
    shapes = {
        name: tuple(d if d is not None else (1 if axis == 0 else next(rest)) for axis, d in enumerate(dims))
        for name, dims in frontend.input_dims(model).items()
    }
    slim = frontend.simplify(model, shapes)
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    executable = compile_module(frontend.import_relax(slim, shapes), target)
    session = _ort_session(slim.SerializeToString(), 1)
    return executable, list(feeds.values()), lambda: session.run(None, feeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=[m.name for m in models.MODELS])
    parser.add_argument("--engines", nargs="+", default=["fp32", "int8_w7"])
    parser.add_argument("--onnx", nargs="*", type=Path, default=[], help="float ONNX files")
    parser.add_argument("--sizes", nargs="*", type=int, default=[], help="their non-batch dynamic dims")
    parser.add_argument("--mcpu", default="haswell")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args()

    from worker.build import make_target, resolve_target

    target = make_target(resolve_target({"kind": "llvm", "mcpu": args.mcpu}))
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    for model in (m for m in models.MODELS if m.name in args.models):
        x = np.random.default_rng(0).standard_normal(model.input_shape).astype(np.float32)
        for engine, build in _builds(model, args.engines, target, args.mcpu).items():
            print_profile(f"{model.name} {engine}", profile(build(), [x], args.runs, clock), args.top)
            sys.stdout.flush()
    for path in args.onnx:
        executable, feeds, ort_fp32 = _onnx_fp32(path, target, args.sizes)
        sites = profile(executable, feeds, args.runs, clock)
        print_profile(f"{path.name} fp32", sites, args.top)
        ort_ms = min(_timed(ort_fp32, clock) for _ in range(args.runs))
        print(f"\nORT fp32 on the same model and feeds: {ort_ms:.2f} ms ({args.clock} clock, least of runs)")


if __name__ == "__main__":
    main()
