"""Latency of the float and quantized builds and of ONNX Runtime fp32 on the original model,
measured in one process, for the performance section.

The engines are timed interleaved (float, quantized, ORT, ORT, quantized, float, ...) rather than
one after the other, so CPU frequency drift, a noisy neighbour or a warming cache hits all of them
equally and the speed-up compares like with like. TVM is imported inside the functions that need
it, so the schema and the HTML page stay importable without TVM.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.report.schema import Latency, Performance, faster_baseline

if TYPE_CHECKING:
    import tvm


#: Timed runs stop once every engine has had this much time (and at least MIN_RUNS runs), so a
#: model that takes seconds per run gets fewer than `bench_runs` runs instead of minutes of bench.
BENCH_BUDGET_S = 20.0
MIN_RUNS = 3

Clock = Callable[[], float]


def _timed_ms(run: Callable[[], object], clock: Clock) -> float:
    start = clock()
    run()
    return (clock() - start) * 1e3


def measure_interleaved(
    runs_by_name: Mapping[str, Callable[[], object]],
    runs: int,
    warmup: int = 3,
    budget_s: float | None = None,
    clock: Clock | None = None,
) -> dict[str, dict[str, float]]:
    """Time several callables alternately; the order flips every round so none always goes first.

    Returns {name: {"median_ms", "p90_ms", "runs"}}. The warm-up runs (first-call allocation, page
    faults, lazy initialisation) are not timed; a first warm-up round that takes more than a tenth
    of `budget_s` is the only one. With `budget_s`, timing stops after the round in which the
    engines have used that much time together, once each has MIN_RUNS runs (or `runs`, if fewer).
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    clock = clock or time.perf_counter
    names = list(runs_by_name)
    for i in range(warmup):
        spent = sum(_timed_ms(runs_by_name[name], clock) for name in names) / 1e3
        if i == 0 and budget_s is not None and spent > budget_s / 10:
            break
    samples: dict[str, list[float]] = {name: [] for name in names}
    spent_ms = 0.0
    for i in range(runs):
        for name in names if i % 2 == 0 else reversed(names):
            samples[name].append(_timed_ms(runs_by_name[name], clock))
            spent_ms += samples[name][-1]
        if budget_s is not None and i + 1 >= min(MIN_RUNS, runs) and spent_ms >= budget_s * 1e3:
            break
    return {
        name: {
            "median_ms": float(np.median(values)),
            "p90_ms": float(np.percentile(values, 90)),
            "runs": len(values),
        }
        for name, values in samples.items()
    }


def measure_latency(run: Callable[[], object], runs: int, warmup: int = 3) -> dict[str, float]:
    """Median and p90 wall time of `run()` in milliseconds over `runs` timed calls."""
    return measure_interleaved({"run": run}, runs, warmup)["run"]


def runtime_threads() -> int:
    """The TVM runtime's thread pool size as the runtime itself reports it.

    Not TVM_NUM_THREADS-or-os.cpu_count(): without the variable TVM picks its own default (measured:
    1 worker on a 2-core x86 VM where os.cpu_count() is 2), and the report must say what was used.
    """
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def constant_bytes(mod: tvm.IRModule) -> int:
    """Bytes of the constants (weights, biases, scales) embedded in the Relax functions of `mod`.

    A constant bound once and used many times is counted once.
    """
    import tvm
    from tvm import relax

    seen: dict[int, int] = {}

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, tvm.ir.GenericConst):
            seen.setdefault(hash(expr), expr.value.numpy().nbytes)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sum(seen.values())


def _vm_runner(lib_path: Path, inputs: list[np.ndarray]) -> Callable[[], object]:
    """A zero-argument call of the library's `main` on device-resident inputs.

    Inputs are copied to TVM tensors once, outside the timed call: the report times the model, not
    the host-to-runtime copy.
    """
    import tvm

    device = tvm.cpu()
    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), device)
    main = vm["main"]
    args = [tvm.runtime.tensor(np.require(x, requirements="C"), device) for x in inputs]  # 0-d stays 0-d

    def run() -> object:
        out = main(*args)
        device.sync()
        return out

    return run


def _onnxruntime_failures() -> tuple[type[Exception], ...]:
    """What ONNX Runtime raises for a model or input it cannot run (its own error classes, and the
    plain errors of its Python wrapper), and nothing else: a time limit must still end the job."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    own = [c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception)]
    return (*own, RuntimeError, ValueError, TypeError, KeyError)


def onnxruntime_runner(
    model_path: Path, inputs: list[np.ndarray], threads: int
) -> tuple[Callable[[], object] | None, str | None]:
    """(a zero-argument run of the original ONNX model on `inputs` with ONNX Runtime fp32 on the CPU
    and `threads` intra-op threads, None) or (None, why it cannot run)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnxruntime is not installed on this worker"
    failures = _onnxruntime_failures()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        feed = {
            spec.name: np.ascontiguousarray(x, dtype=_ORT_DTYPES.get(spec.type, x.dtype))
            for spec, x in zip(session.get_inputs(), inputs, strict=True)
        }
        session.run(None, feed)
    except failures as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        return None, f"ONNX Runtime could not run the model: {message[:300]}"
    return (lambda: session.run(None, feed)), None


#: ONNX Runtime's input type names -> numpy dtypes (the samples are cast to the model's own)
_ORT_DTYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(bool)": "bool",
    **{f"tensor({n})": n for n in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64")},
}


def bench_artifacts(
    float_lib_path: Path,
    quant_lib_path: Path,
    model_path: Path,
    inputs: list[np.ndarray],
    runs: int,
    *,
    weight_bytes_float: int,
    weight_bytes_quantized: int,
    warmup: int = 3,
    budget_s: float = BENCH_BUDGET_S,
) -> Performance:
    """Load both exported libraries and ONNX Runtime on the original model, time them interleaved
    on the same inputs and fill the section (hotspots are the caller's: see verify).

    The weight byte counts come from the caller (see `constant_bytes`): the compiled libraries no
    longer expose their constants separately from code.
    """
    threads = runtime_threads()
    engines = {
        "float": _vm_runner(Path(float_lib_path), inputs),
        "quantized": _vm_runner(Path(quant_lib_path), inputs),
    }
    ort_run, ort_note = onnxruntime_runner(Path(model_path), inputs, threads)
    if ort_run is not None:
        engines["onnxruntime"] = ort_run
    timings = measure_interleaved(engines, runs, warmup, budget_s)
    latency = {name: Latency(median_ms=t["median_ms"], p90_ms=t["p90_ms"]) for name, t in timings.items()}
    ort = latency.get("onnxruntime")
    baseline, baseline_ms = faster_baseline(latency["float"], ort)
    quant_ms = latency["quantized"].median_ms
    return Performance(
        runs=int(timings["quantized"]["runs"]),
        threads=threads,
        float=latency["float"],
        quantized=latency["quantized"],
        onnxruntime=ort,
        onnxruntime_note=ort_note,
        baseline=baseline,
        speedup=baseline_ms / quant_ms,
        speedup_vs_float=latency["float"].median_ms / quant_ms,
        artifact_bytes=os.path.getsize(quant_lib_path),
        float_artifact_bytes=os.path.getsize(float_lib_path),
        weight_bytes_float=weight_bytes_float,
        weight_bytes_quantized=weight_bytes_quantized,
    )
