"""Single float layers, ours vs ONNX Runtime fp32, timed interleaved in one process.

Usage: TVM_NUM_THREADS=1 .venv/bin/python -m bench.layers [--layers stem 3x3 ...] [--rounds 5]

Each layer is a one-node ONNX model (Conv + bias + Relu, or MatMul + Add) built from the bench
models' layer kinds; ours is `compile_module` on its `from_onnx` import. The engines take turns,
`--rounds` times, so a load spike on a shared machine hits both; the figure is the median over
rounds of each round's median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: name -> (input shape, out channels, kernel, stride, groups); kernel 0 is a MatMul.
LAYERS: dict[str, tuple[tuple[int, ...], int, int, int, int]] = {
    "stem 3->64 k7 s2 224": ((1, 3, 224, 224), 64, 7, 2, 1),
    "3x3 64 56": ((1, 64, 56, 56), 64, 3, 1, 1),
    "3x3 s2 64->128 56": ((1, 64, 56, 56), 128, 3, 2, 1),
    "3x3 128 28": ((1, 128, 28, 28), 128, 3, 1, 1),
    "3x3 256 14": ((1, 256, 14, 14), 256, 3, 1, 1),
    "3x3 512 7": ((1, 512, 7, 7), 512, 3, 1, 1),
    "1x1 s2 256->512 14": ((1, 256, 14, 14), 512, 1, 2, 1),
    "1x1 32->64 112": ((1, 32, 112, 112), 64, 1, 1, 1),
    "1x1 512 14": ((1, 512, 14, 14), 512, 1, 1, 1),
    "1x1 512->1024 7": ((1, 512, 7, 7), 1024, 1, 1, 1),
    "dw3x3 32 112": ((1, 32, 112, 112), 32, 3, 1, 32),
    "dw3x3 s2 128 56": ((1, 128, 56, 56), 128, 3, 2, 128),
    "group4 3x3 64 28": ((1, 64, 28, 28), 64, 3, 1, 4),
    "matmul 16x512x2048": ((16, 512), 2048, 0, 1, 1),
    "matmul 1x512x1000": ((1, 512), 1000, 0, 1, 1),
}


def layer_onnx(shape: tuple[int, ...], out: int, kernel: int, stride: int, groups: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    if kernel == 0:
        w = rng.standard_normal((shape[-1], out)).astype(np.float32)
        b = rng.standard_normal(out).astype(np.float32)
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
        out_shape = [*shape[:-1], out]
    else:
        w = rng.standard_normal((out, shape[1] // groups, kernel, kernel)).astype(np.float32) * 0.1
        b = rng.standard_normal(out).astype(np.float32)
        conv = helper.make_node(
            "Conv",
            ["x", "w", "b"],
            ["c"],
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[kernel // 2] * 4,
            group=groups,
        )
        nodes = [conv, helper.make_node("Relu", ["c"], ["y"])]
        side = (shape[2] + 2 * (kernel // 2) - kernel) // stride + 1
        out_shape = [shape[0], out, side, side]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def _median_us(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def _compare(
    proto: onnx.ModelProto, x: np.ndarray, target, work: Path, rounds: int, runs: int
) -> tuple[float, float]:
    """(ours, ORT) median µs, after checking both give the same result."""
    from tvm.relax.frontend.onnx import from_onnx

    from bench.run import _ort_runner, _tvm_runner
    from worker.kernels import compile_module

    path = work / "layer.onnx"
    onnx.save(proto, path)
    engines = {
        "ours": _tvm_runner(compile_module(from_onnx(proto, keep_params_in_input=False), target), x),
        "ort": _ort_runner(path, 1, x),
    }
    np.testing.assert_allclose(engines["ours"]().numpy(), engines["ort"]()[0], rtol=1e-3, atol=1e-3)
    times: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(rounds):
        for key, fn in engines.items():
            fn()
            times[key].append(_median_us(fn, runs))
    return statistics.median(times["ours"]), statistics.median(times["ort"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="*", default=list(LAYERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--mcpu", default="haswell")
    args = parser.parse_args()

    from worker.build import make_target, resolve_target

    target = make_target(resolve_target({"kind": "llvm", "mcpu": args.mcpu}))
    print("| layer | ours µs | ORT fp32 µs | ours / ORT |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for name in (n for n in LAYERS if any(n.startswith(p) for p in args.layers)):
            x = np.random.default_rng(1).standard_normal(LAYERS[name][0]).astype(np.float32)
            ours, theirs = _compare(layer_onnx(*LAYERS[name]), x, target, Path(work), args.rounds, args.runs)
            print(f"| {name} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
