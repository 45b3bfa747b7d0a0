"""Fixtures for the quantizer tests: run the real pipeline once per (model, qconfig) and share it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.models import random_calibration
from worker import frontend
from worker.pipeline import PipelineResult, run_pipeline
from worker.qconfig import QConfig
from worker.quantize.graph import Graph, build_graph
from worker.quantize.prerequisite import prerequisite_optimize

#: everything quantized (no skipped conv or dense layer)
INTEGRAL = {"skip_conv_layers": [], "skip_dense_layer": False, "bench_runs": 3}
#: ... with per-channel max weights: the configuration the accuracy bars are set for
ACCURATE = {**INTEGRAL, "per_channel": True, "weight_scale": "max"}


def quantize(
    tmp: Path, model: onnx.ModelProto | Path, calibration: dict[str, np.ndarray] | None, **qconfig: object
) -> PipelineResult:
    tmp.mkdir(parents=True, exist_ok=True)
    if isinstance(model, onnx.ModelProto):
        onnx.save(model, tmp / "model.onnx")
        model = tmp / "model.onnx"
    calib_path = None
    if calibration is not None:
        calib_path = tmp / "calibration.npz"
        np.savez(calib_path, **calibration)
    return run_pipeline(model, calib_path, QConfig(**qconfig), tmp / "out")


def run_artifact(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The artifact contract: load_module + VirtualMachine, float inputs in ONNX order."""
    import tvm

    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]


def run_onnx(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def one_tensor_model(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], shape: tuple[int, ...], opset: int
) -> onnx.ModelProto:
    """A float model from input `x` to output `y` of one shape."""
    graph = onnx.helper.make_graph(
        nodes,
        "block",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)],
        inits,
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])


def prepared_graph(model: onnx.ModelProto) -> Graph:
    """The graph the partition sees: imported at the model's own shapes, prerequisite passes run."""
    shapes = frontend.fixed_input_shapes(model, None)
    return build_graph(prerequisite_optimize(frontend.import_relax(frontend.simplify(model, shapes), shapes)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="session")
def calib_factory():
    return random_calibration
