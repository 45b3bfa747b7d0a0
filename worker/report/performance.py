"""Latency of the float and quantized builds, measured in one process, for the performance section.

The two builds are timed interleaved (float, quantized, quantized, float, ...) rather than one after
the other, so CPU frequency drift, a noisy neighbour or a warming cache hits both equally and the
speed-up compares like with like. TVM is imported inside the functions that need it, so the schema
and the HTML page stay importable without TVM.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from worker.report.schema import Latency, Performance

if TYPE_CHECKING:
    import tvm


def _timed_ms(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def measure_interleaved(
    runs_by_name: Mapping[str, Callable[[], object]], runs: int, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Time several callables alternately; the order flips every round so none always goes first.

    Returns {name: {"median_ms", "p90_ms", "runs"}}. The warm-up runs (first-call allocation, page
    faults, lazy initialisation) are not timed.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    names = list(runs_by_name)
    for _ in range(warmup):
        for name in names:
            runs_by_name[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        for name in names if i % 2 == 0 else reversed(names):
            samples[name].append(_timed_ms(runs_by_name[name]))
    return {
        name: {
            "median_ms": float(np.median(values)),
            "p90_ms": float(np.percentile(values, 90)),
            "runs": runs,
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


def bench_artifacts(
    float_lib_path: Path,
    quant_lib_path: Path,
    inputs: list[np.ndarray],
    runs: int,
    *,
    weight_bytes_float: int,
    weight_bytes_quantized: int,
    warmup: int = 3,
) -> Performance:
    """Load both exported libraries, time them interleaved on the same inputs and fill the section.

    The weight byte counts come from the caller (see `constant_bytes`): the compiled libraries no
    longer expose their constants separately from code.
    """
    timings = measure_interleaved(
        {
            "float": _vm_runner(Path(float_lib_path), inputs),
            "quantized": _vm_runner(Path(quant_lib_path), inputs),
        },
        runs,
        warmup,
    )
    float_ms, quant_ms = timings["float"], timings["quantized"]
    return Performance(
        runs=runs,
        threads=runtime_threads(),
        float=Latency(median_ms=float_ms["median_ms"], p90_ms=float_ms["p90_ms"]),
        quantized=Latency(median_ms=quant_ms["median_ms"], p90_ms=quant_ms["p90_ms"]),
        speedup=float_ms["median_ms"] / quant_ms["median_ms"],
        artifact_bytes=os.path.getsize(quant_lib_path),
        float_artifact_bytes=os.path.getsize(float_lib_path),
        weight_bytes_float=weight_bytes_float,
        weight_bytes_quantized=weight_bytes_quantized,
    )
