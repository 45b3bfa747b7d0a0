"""Bad input the HTTP layer must refuse before queueing, each a 4xx problem body (before the fix:
500s, or a job accepted that then crashed its worker)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper
from svc_helpers import conv_model_bytes, custom_op_model_bytes, npz_bytes, submission

pytestmark = pytest.mark.redis

GLOBAL_SCALE = json.dumps({"calibrate_mode": "global_scale"})

MAX_MODE = json.dumps({"calibrate_mode": "max"})


@pytest.mark.parametrize(
    "qconfig",
    ["[" * 30000 + "]" * 30000, '{"global_scale": ' + "7" * 5000 + "}", '{"a":' * 10000 + "1" + "}" * 10000],
    ids=["nested-30000", "5000-digit-integer", "nested-objects"],
)
def test_hostile_qconfig_text_is_422(client: TestClient, qconfig: str) -> None:
    response = client.post("/quantize", **submission(conv_model_bytes(), qconfig=qconfig))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "E_QCONFIG"


def test_an_offset_past_int64_is_422(client: TestClient) -> None:
    response = client.get("/jobs", params={"offset": 9223372036854775807})
    assert response.status_code == 422 and response.json()["code"] == "E_REQUEST"


@pytest.mark.parametrize(
    "target", ["llvm -mtriple=aarch64-linux-gnu", {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}]
)
def test_a_cross_target_is_refused_before_queueing(client: TestClient, target) -> None:
    qconfig = json.dumps({"target": target})
    response = client.post("/quantize", **submission(conv_model_bytes(), qconfig=qconfig))
    assert response.status_code == 422 and response.json()["detail"]["field"] == "target", response.text
    assert "cross-compilation" in response.json()["message"]
    assert client.get("/jobs").json()["total"] == 0


def _npz_declaring(shape: tuple[int, ...]) -> bytes:
    """An .npz whose one member is a 1 KiB .npy whose header declares `shape` float32 samples."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 1024)
    return buf.getvalue()


def test_an_npz_header_declaring_more_than_the_unpacked_limit_is_422(client: TestClient) -> None:
    calibration = _npz_declaring((10_000_000, 3, 16, 16))  # 30 GB declared in a 1 KiB member
    response = client.post("/quantize", **submission(conv_model_bytes(), calibration, MAX_MODE))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "E_CALIBRATION" and "unpacked" in response.json()["message"]


def _model_with_input(shape: tuple[int, ...]) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "big_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_declared_input_of_a_billion_elements_is_422(client: TestClient) -> None:
    response = client.post(
        "/quantize", **submission(_model_with_input((1, 1000, 1000, 1000)), qconfig=GLOBAL_SCALE)
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "E_MODEL_INVALID" and body["detail"]["input"] == "x", body


def _sequence_input_model() -> bytes:
    index = numpy_helper.from_array(np.array(0, dtype=np.int64), "i")
    graph = helper.make_graph(
        [helper.make_node("SequenceAt", ["s", "i"], ["a"]), helper.make_node("Add", ["x", "a"], ["y"])],
        "sequence_input",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3)),
            helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 3))],
        initializer=[index],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_a_sequence_typed_input_is_422_naming_it(client: TestClient) -> None:
    calibration = npz_bytes(x=np.zeros((2, 3), np.float32), s=np.zeros((2, 3), np.float32))
    response = client.post("/quantize", **submission(_sequence_input_model(), calibration, MAX_MODE))
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["input"] == "s"


def test_holdout_samples_leaving_no_calibration_is_422(client: TestClient) -> None:
    qconfig = json.dumps({"calibrate_mode": "max", "holdout_samples": 8})
    calibration = npz_bytes(x=np.zeros((8, 3, 16, 16), np.float32))
    response = client.post("/quantize", **submission(conv_model_bytes(), calibration, qconfig))
    assert response.status_code == 422 and response.json()["detail"]["field"] == "holdout_samples"


def _loop_model() -> bytes:
    """x -> Loop (2 trips of an Identity body) -> y: valid ONNX that TVM's importer cannot convert."""
    value = (TensorProto.FLOAT, (1, 3))
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Identity", ["v_in"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, ()),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, ()),
            helper.make_tensor_value_info("v_in", *value),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, ()),
            helper.make_tensor_value_info("v_out", *value),
        ],
    )
    trips = numpy_helper.from_array(np.array(2, np.int64), "trips")
    cond = numpy_helper.from_array(np.array(True), "cond")
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        "loop",
        [helper.make_tensor_value_info("x", *value)],
        [helper.make_tensor_value_info("y", *value)],
        initializer=[trips, cond],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("model", [_loop_model(), custom_op_model_bytes()], ids=["Loop", "unknown-domain"])
def test_an_op_no_importer_or_converter_handles_is_422_before_queueing(
    client: TestClient, model: bytes
) -> None:
    response = client.post("/quantize", **submission(model, qconfig=GLOBAL_SCALE))
    assert response.status_code == 422 and response.json()["code"] == "E_UNSUPPORTED_OP", response.text
    assert client.get("/jobs").json()["total"] == 0
