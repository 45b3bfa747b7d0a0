"""Side-by-side latency: TVM (default build and ours), fp32 and int8, vs ONNX Runtime fp32 and int8 QDQ.

Usage: .venv/bin/python -m bench.run [--threads 1 2] [--models resnet_cnn_224 ...] [--mcpu native]
       [--out bench/results.json]

Each thread count runs in its own child process (TVM reads TVM_NUM_THREADS once, when its thread
pool starts); inside a child every engine of a model is built first, then the engines take turns,
`--rounds` times (each turn: `--runs` calls), so a load spike on a shared machine hits every
engine alike; each figure is the median over rounds of the turn's median. Besides wall time the
process CPU time of each call is recorded (`cpu_ms`): at 1 thread it is the call's own compute,
without the time slices the scheduler gives to other processes. The table prints both, the goal
ratios of issue 11, and which instruction set (worker/kernels/isa.py) and dot products each int8
build's kernels use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import kernels_gops, models
from bench.timing import interleaved_ms

ROOT = Path(__file__).resolve().parent


def _tvm_runner(executable, x: np.ndarray) -> Callable[[], object]:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    arg = tvm.runtime.tensor(x)
    return lambda: vm["main"](arg)


def _ort_session(model: Path | bytes, threads: int):
    """An ONNX Runtime CPU session on `threads` intra-op threads (a path or serialized model)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def _ort_runner(model_path: Path, threads: int, x: np.ndarray) -> Callable[[], object]:
    sess = _ort_session(model_path, threads)
    return lambda: sess.run(None, {"x": x})


def _ort_int8(fp32_path: Path, model: models.Model, out_path: Path) -> Path:
    """ORT's own static quantization: QDQ, per-channel int8 weights, 16 random calibration samples."""
    if out_path.exists():
        return out_path
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.samples = iter(
                [{"x": rng.standard_normal(model.input_shape).astype(np.float32)} for _ in range(16)]
            )

        def get_next(self):
            return next(self.samples, None)

    quantize_static(
        str(fp32_path),
        str(out_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return out_path


def _pipeline_artifact(model: models.Model, proto, target_spec: dict, weight_bits: int):
    """What a user gets: `run_pipeline` on the ONNX model (max calibration on 8 random samples,
    every layer quantized, per-channel weights), loaded back from the exported model.so."""
    import onnx
    import tvm

    from worker.pipeline import run_pipeline
    from worker.qconfig import QConfig

    work = Path(tempfile.mkdtemp(prefix=f"tvmq-bench-{model.name}-"))
    onnx.save(proto, work / "model.onnx")
    rng = np.random.default_rng(2)
    samples = 8 * model.input_shape[0]  # a static batch B takes the samples B at a time
    np.savez(
        work / "calibration.npz", x=rng.standard_normal((samples, *model.input_shape[1:])).astype(np.float32)
    )
    qconfig = QConfig(
        calibrate_mode="max",
        skip_conv_layers=[],
        skip_dense_layer=False,
        per_channel=True,
        weight_scale="max",
        nbit_weight=weight_bits,
        holdout_samples=0,
        bench_runs=1,
        target=target_spec,
    )
    result = run_pipeline(work / "model.onnx", work / "calibration.npz", qconfig, work / "out")
    return tvm.runtime.load_module(str(result.artifact))


def _tvm_builds(model: models.Model, proto, target, args: argparse.Namespace) -> dict[str, Callable]:
    """Name -> build function for every TVM variant of one model."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from worker.kernels import compile_module

    def float_mod():
        return from_onnx(proto, keep_params_in_input=False)

    builds: dict[str, Callable] = {"tvm_fp32_ours": lambda: compile_module(float_mod(), target)}
    for bits in args.weight_bits:
        builds[f"tvm_int8_w{bits}_ours"] = lambda b=bits: compile_module(
            models.to_int8_relax(model, weight_bits=b), target
        )
    for bits in args.weight_bits:
        builds[f"tvm_int8_pipeline_w{bits}"] = lambda b=bits: _pipeline_artifact(
            model, proto, {"kind": "llvm", "mcpu": args.mcpu}, b
        )
    if args.with_default:
        builds["tvm_fp32_default"] = lambda: tvm.compile(float_mod(), target)
        builds["tvm_int8_w8_default"] = lambda: tvm.compile(
            models.to_int8_relax(model, weight_bits=8), target
        )
    return builds


def int8_kernels(executable) -> str:
    """Which ISA and dot products a build's packed int8 kernels use, from the kernels' names."""
    from tvm import relax

    from worker.kernels.rewrite import kernel_counts

    if not isinstance(executable, relax.VMExecutable):
        executable = relax.VMExecutable(executable)
    counts = kernel_counts(executable.as_text())
    if not counts:
        return "no packed kernels (TVM's default int8 lowering)"
    return ", ".join(f"{isa} {dot} x{n}" for (isa, dot), n in sorted(counts.items()))


def run_child(args: argparse.Namespace) -> dict:
    """One thread count: every engine on every model."""
    import onnx

    from worker.build import faster_native_isa, int8_isa, make_target, resolve_target

    target = make_target(resolve_target({"kind": "llvm", "mcpu": args.mcpu}))
    threads = args.threads[0]
    work = Path(args.work)
    rows: dict[str, dict[str, float]] = {}
    cpu_rows: dict[str, dict[str, float]] = {}
    compile_s: dict[str, dict[str, float]] = {}
    kernels: dict[str, dict[str, str]] = {}
    for model in (m for m in models.MODELS if m.name in args.models):
        x = np.random.default_rng(0).standard_normal(model.input_shape).astype(np.float32)
        proto = models.to_onnx(model)
        fp32_path = work / f"{model.name}.onnx"
        onnx.save(proto, fp32_path)
        builds = _tvm_builds(model, proto, target, args)
        compile_s[model.name], kernels[model.name] = {}, {}
        engines: dict[str, Callable[[], object]] = {}
        for name, build in builds.items():
            t0 = time.perf_counter()
            executable = build()
            compile_s[model.name][name] = round(time.perf_counter() - t0, 1)
            if "int8" in name:
                kernels[model.name][name] = int8_kernels(executable)
            engines[name] = _tvm_runner(executable, x)
        engines["ort_fp32"] = _ort_runner(fp32_path, threads, x)
        int8_path = _ort_int8(fp32_path, model, work / f"{model.name}.qdq.onnx")
        engines["ort_int8_qdq"] = _ort_runner(int8_path, threads, x)
        rows[model.name], cpu_rows[model.name] = interleaved_ms(engines, args.rounds, args.runs)
        print(f"[{threads} thr] {model.name}: {rows[model.name]}", file=sys.stderr, flush=True)
    gops = kernels_gops.measure(models.RESNET, args.weight_bits, target, threads) if args.gops else []
    return {
        "threads": threads,
        "target": str(target),
        "isa": int8_isa(target),
        "native_isa": faster_native_isa(target),
        "latency_ms": rows,
        "cpu_ms": cpu_rows,
        "load_average": list(os.getloadavg()),
        "compile_s": compile_s,
        "int8_kernels": kernels,
        "int8_conv_kernels": gops,
    }


def _ratios(row: dict[str, float]) -> dict[str, float]:
    """Issue 11's goals: int8 <= 0.8 x best ORT, int8 never slower than our float build, our
    fp32 <= 1.5 x ORT fp32 (int8 = the fastest of the pipeline artifacts, else of the twins)."""
    ort_best = min(row["ort_fp32"], row["ort_int8_qdq"])
    pipeline = [v for k, v in row.items() if k.startswith("tvm_int8_pipeline")]
    int8 = min(pipeline or [v for k, v in row.items() if k.startswith("tvm_int8") and k.endswith("_ours")])
    return {
        "int8 / best_ORT (goal <= 0.8)": int8 / ort_best,
        "int8 / fp32_ours (goal <= 1)": int8 / row["tvm_fp32_ours"],
        "fp32_ours / ORT_fp32 (goal <= 1.5)": row["tvm_fp32_ours"] / row["ort_fp32"],
    }


def print_table(results: list[dict]) -> None:
    for res in results:
        load = ", ".join(f"{v:.1f}" for v in res["load_average"])
        print(f"\n## {res['threads']} thread(s): median latency, ms (load average at the end: {load})")
        native = f'; target "native" would use {res["native_isa"]}' if res["native_isa"] else ""
        print(f"target {res['target']}: int8 kernels on {res['isa'] or 'none'}{native}")
        for model, row in res["latency_ms"].items():
            cpu = res["cpu_ms"][model]
            cells = "  ".join(f"{k}={v:.2f}" for k, v in row.items())
            cpu_cells = "  ".join(f"{k}={v:.2f}" for k, v in cpu.items())
            ratios = "  ".join(f"{k}: {v:.2f}" for k, v in _ratios(row).items())
            cpu_ratios = "  ".join(f"{k}: {v:.2f}" for k, v in _ratios(cpu).items())
            print(
                f"{model}\n  wall: {cells}\n  cpu:  {cpu_cells}\n  wall ratios: {ratios}\n"
                f"  cpu ratios:  {cpu_ratios}\n  compile s: {res['compile_s'][model]}"
            )
            for name, used in res["int8_kernels"][model].items():
                print(f"  {name}: {used}")
        for k in res["int8_conv_kernels"]:
            print(
                f"  int8 conv {k['layer']} [{k['isa']} {k['mode']}]: {k['ms']:.3f} ms, "
                f"{k['gops']:.1f} GOP/s, {100 * k['fraction_of_peak']:.0f}% of the {k['isa']} peak"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", default=[m.name for m in models.MODELS])
    parser.add_argument("--weight-bits", type=int, nargs="+", default=[7, 8])
    parser.add_argument(
        "--mcpu",
        default="haswell",
        help='LLVM CPU for TVM: a name (haswell, znver3, sapphirerapids, ...) or "native" (this CPU)',
    )
    parser.add_argument(
        "--with-default", action="store_true", help="also time tvm.compile's default build (slow)"
    )
    parser.add_argument("--gops", action="store_true", help="time each ResNet int8 conv kernel alone")
    parser.add_argument("--runs", type=int, default=10, help="calls per engine per round")
    parser.add_argument("--rounds", type=int, default=5, help="turns of every engine")
    parser.add_argument("--out", type=Path, default=ROOT / "results.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    results = []
    with tempfile.TemporaryDirectory() as work:
        for threads in args.threads:
            cmd = [
                sys.executable,
                "-m",
                "bench.run",
                "--child",
                "--work",
                work,
                "--threads",
                str(threads),
                "--models",
                *args.models,
                "--weight-bits",
                *map(str, args.weight_bits),
                "--mcpu",
                args.mcpu,
                "--runs",
                str(args.runs),
                "--rounds",
                str(args.rounds),
            ]
            cmd += ["--with-default"] if args.with_default else []
            cmd += ["--gops"] if args.gops else []
            env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
            out = subprocess.run(
                cmd, env=env, cwd=ROOT.parent, check=True, stdout=subprocess.PIPE, text=True
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
    print_table(results)
    args.out.write_text(json.dumps({"cpu": _cpu_name(), "results": results}, indent=2))
    print(f"\nwrote {args.out}")


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
