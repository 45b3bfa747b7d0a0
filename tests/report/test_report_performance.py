"""Timing statistics on a fake clock, and the real benchmark on two tiny exported TVM libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worker.report import performance
from worker.report.performance import (
    MIN_RUNS,
    bench_artifacts,
    constant_bytes,
    measure_interleaved,
    measure_latency,
    onnxruntime_runner,
    runtime_threads,
)


class _FakeClock:
    """perf_counter stand-in: time moves only when a benchmarked callable says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_statistics_and_interleaving_on_a_fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(performance.time, "perf_counter", clock)
    calls: list[str] = []
    a_costs = iter([99.0] * 2 + [float(ms) for ms in range(1, 11)])  # 2 warm-ups, then 1..10 ms
    b_costs = iter([99.0] * 2 + [5.0] * 10)

    def run(name: str, costs: object) -> object:
        def step() -> None:
            calls.append(name)
            clock.now += next(costs) / 1e3  # type: ignore[call-overload]

        return step

    stats = measure_interleaved({"a": run("a", a_costs), "b": run("b", b_costs)}, runs=10, warmup=2)
    assert calls[:4] == ["a", "b", "a", "b"]  # warm-ups
    assert calls[4:10] == ["a", "b", "b", "a", "a", "b"]  # timed rounds alternate which goes first
    assert stats["a"]["median_ms"] == pytest.approx(5.5)
    assert stats["a"]["p90_ms"] == pytest.approx(9.1)  # numpy's linear interpolation over 1..10
    assert stats["b"] == pytest.approx({"median_ms": 5.0, "p90_ms": 5.0, "runs": 10})


def test_a_time_budget_bounds_the_runs_of_slow_engines() -> None:
    """Two engines of 2 s a run, 20 runs asked, a 20 s budget: one warm-up round (it took more than
    a tenth of the budget), then rounds until 20 s of timed runs (5 rounds), not 20 rounds."""
    clock = _FakeClock()
    calls: list[str] = []

    def slow(name: str) -> object:
        def step() -> None:
            calls.append(name)
            clock.now += 2.0

        return step

    stats = measure_interleaved(
        {"a": slow("a"), "b": slow("b")}, runs=20, warmup=3, budget_s=20.0, clock=clock
    )
    assert len(calls) == 2 + 2 * 5
    assert stats["a"] == pytest.approx({"median_ms": 2000.0, "p90_ms": 2000.0, "runs": 5})


def test_a_budget_never_cuts_below_the_minimum_runs() -> None:
    clock = _FakeClock()

    def very_slow() -> None:
        clock.now += 60.0

    stats = measure_interleaved({"a": very_slow}, runs=20, budget_s=1.0, clock=clock)
    assert stats["a"]["runs"] == MIN_RUNS


def test_measure_latency_counts_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(performance.time, "perf_counter", clock)
    calls = 0

    def run() -> None:
        nonlocal calls
        calls += 1
        clock.now += 0.002

    stats = measure_latency(run, runs=7, warmup=3)
    assert calls == 10
    assert stats == pytest.approx({"median_ms": 2.0, "p90_ms": 2.0, "runs": 7})
    with pytest.raises(ValueError, match="at least 1"):
        measure_latency(run, runs=0)


def _matmul_module(dtype: str):  # type: ignore[no-untyped-def]
    """main(x: float32[1, 64]) = x·W + x·W with W (64×32, ones) of `dtype`, bound once and used twice."""
    from tvm import relax

    acc = "float32" if dtype == "float32" else "int32"
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 64), "float32"))
    w = relax.const(np.ones((64, 32), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            xc = bb.emit(relax.op.astype(x, dtype))
            y = bb.emit(
                relax.op.add(relax.op.matmul(xc, w, out_dtype=acc), relax.op.matmul(xc, w, out_dtype=acc))
            )
            out = bb.emit_output(relax.op.astype(y, "float32"))
        bb.emit_func_output(out)
    return bb.get()


@pytest.fixture(scope="module")
def libraries(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The float and int8 libraries of _matmul_module, and the same model as ONNX."""
    import onnx
    import tvm
    from onnx import TensorProto, helper, numpy_helper

    out = tmp_path_factory.mktemp("libs")
    paths = []
    for dtype in ("float32", "int8"):
        path = out / f"{dtype}.so"
        tvm.compile(_matmul_module(dtype), tvm.target.Target({"kind": "llvm"})).export_library(str(path))
        paths.append(path)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "m"], ["y"])],
        "matmul_twice",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 64))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 32))],
        [numpy_helper.from_array(np.ones((64, 32), np.float32), "w")],
    )
    model = out / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    return paths[0], paths[1], model


def test_constant_bytes_counts_each_weight_once() -> None:
    assert constant_bytes(_matmul_module("float32")) == 64 * 32 * 4
    assert constant_bytes(_matmul_module("int8")) == 64 * 32


def test_runner_executes_the_library(libraries: tuple[Path, Path, Path]) -> None:
    x = np.arange(64, dtype=np.float32).reshape(1, 64) % 7
    for lib in libraries[:2]:
        out = performance._vm_runner(lib, [x])()
        np.testing.assert_array_equal(out.numpy(), np.full((1, 32), 2 * x.sum(), np.float32))
    run, note = onnxruntime_runner(libraries[2], [x], 1)
    assert note is None
    np.testing.assert_array_equal(run()[0], np.full((1, 32), 2 * x.sum(), np.float32))


def test_bench_artifacts_real_runs(libraries: tuple[Path, Path, Path]) -> None:
    float_lib, quant_lib, model = libraries
    x = np.ones((1, 64), np.float32)
    perf = bench_artifacts(
        float_lib, quant_lib, model, [x], runs=5, weight_bytes_float=8192, weight_bytes_quantized=2048
    )
    assert perf.runs == 5
    assert perf.threads == runtime_threads() >= 1
    assert perf.onnxruntime is not None and perf.onnxruntime_note is None
    for lat in (perf.float, perf.quantized, perf.onnxruntime):
        assert 0 < lat.median_ms <= lat.p90_ms
    faster = min(perf.float.median_ms, perf.onnxruntime.median_ms)
    assert perf.baseline == ("tvm_float" if faster == perf.float.median_ms else "onnxruntime_fp32")
    assert perf.speedup == pytest.approx(faster / perf.quantized.median_ms)
    assert perf.speedup_vs_float == pytest.approx(perf.float.median_ms / perf.quantized.median_ms)
    assert perf.float_artifact_bytes == float_lib.stat().st_size
    assert perf.artifact_bytes == quant_lib.stat().st_size
    assert (perf.weight_bytes_float, perf.weight_bytes_quantized) == (8192, 2048)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="TVM caps its pool at the core count")
def test_runtime_threads_follows_tvm_num_threads() -> None:
    """2 threads on request, where TVM's own default on a 2-core x86 VM is 1 (measured)."""
    env = {**os.environ, "TVM_NUM_THREADS": "2"}
    code = "from worker.report.performance import runtime_threads; print(runtime_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"


def test_a_model_onnxruntime_cannot_run_is_benched_without_it(
    libraries: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """ORT is the external reference, not a requirement: the reason it is missing is reported."""
    float_lib, quant_lib, _ = libraries
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    perf = bench_artifacts(
        float_lib,
        quant_lib,
        broken,
        [np.ones((1, 64), np.float32)],
        runs=3,
        weight_bytes_float=0,
        weight_bytes_quantized=0,
    )
    assert perf.onnxruntime is None and perf.baseline == "tvm_float"
    assert perf.onnxruntime_note.startswith("ONNX Runtime could not run the model")
