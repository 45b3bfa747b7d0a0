"""Builders shared by the service tests: tiny ONNX models made with onnx.helper, calibration
archives, multipart submissions, and polling a job to a state."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

INPUT_SHAPE = (1, 3, 16, 16)


def conv_model_bytes() -> bytes:
    """x[1,3,16,16] -> Conv(4, 3x3, pad 1) -> Relu -> GlobalAveragePool -> y[1,4,1,1]."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, INPUT_SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4, 1, 1))],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def custom_op_model_bytes() -> bytes:
    """A valid ONNX model whose only op lives in a custom domain no importer knows."""
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example.custom")
    graph = helper.make_graph(
        [node],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, INPUT_SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, INPUT_SHAPE)],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example.custom", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def conv4d_model_bytes() -> bytes:
    """Valid ONNX with only supported op types that TVM's importer still refuses (a 4-d convolution:
    it stops at 3 spatial dims), so it passes the upload checks and fails in the worker."""
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv4d",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3, 3, 3])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def npz_bytes(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def calibration_samples(n: int = 8) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 1, (n, *INPUT_SHAPE[1:])).astype(np.float32)


def submission(model: bytes, calibration: bytes | None = None, qconfig: str | None = None) -> dict[str, Any]:
    """httpx keyword arguments for POST /quantize."""
    files = {"model": ("model.onnx", model, "application/octet-stream")}
    if calibration is not None:
        files["calibration"] = ("calibration.npz", calibration, "application/octet-stream")
    return {"files": files, "data": {"qconfig": qconfig} if qconfig is not None else {}}


def wait_for(client: TestClient, job_id: str, states: set[str], timeout: float = 900.0) -> dict[str, Any]:
    """Poll GET /jobs/{id} until the job reaches one of `states`; fails the test past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job['state']} ({job['stage']}) after {timeout:.0f} s")
        time.sleep(0.1)
