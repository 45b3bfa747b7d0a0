"""The HTTP API without a worker: validation before queueing, job records, cancel, auth, health.

Jobs submitted here stay queued (nothing consumes the per-test queue), which is what makes the
409 and cancel-while-queued cases deterministic.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from svc_helpers import (
    INPUT_SHAPE,
    calibration_samples,
    conv_model_bytes,
    custom_op_model_bytes,
    npz_bytes,
    submission,
)

from service.app import create_app
from worker.runtime.settings import Settings

pytestmark = pytest.mark.redis

MAX_MODE = json.dumps({"calibrate_mode": "max"})
#: the only mode that runs without calibration data (the default qconfig needs data)
GLOBAL_SCALE = json.dumps({"calibrate_mode": "global_scale"})


def test_qconfig_schema_lists_relay_fields(client: TestClient) -> None:
    schema = client.get("/qconfig/schema").json()
    assert {"calibrate_mode", "nbit_input", "skip_conv_layers"} <= set(schema["properties"])


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/quantize", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/artifact", "/readyz"} <= set(paths)


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job-id", "..%2F..%2Fetc"])
def test_unknown_job_is_404(client: TestClient, job_id: str) -> None:
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/artifact", f"/jobs/{job_id}/report"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "E_NOT_FOUND"
    assert client.delete(f"/jobs/{job_id}").status_code == 404


def test_submit_then_409_until_finished_then_cancel(client: TestClient, settings: Settings) -> None:
    response = client.post(
        "/quantize", **submission(conv_model_bytes(), npz_bytes(x=calibration_samples()), MAX_MODE)
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert response.headers["location"] == response.json()["status_url"]
    assert response.headers["location"].endswith(f"/jobs/{job_id}")

    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "queued" and job["progress"] == 0 and job["error"] is None
    assert job["links"]["artifact"] is None and job["model_name"] == "model.onnx"
    job_dir = settings.storage_dir / "jobs" / job_id
    assert (job_dir / "input" / "model.onnx").read_bytes() == conv_model_bytes()
    for path in ("artifact", "report"):
        conflict = client.get(f"/jobs/{job_id}/{path}")
        assert conflict.status_code == 409
        assert conflict.json()["code"] == "E_NOT_FINISHED" and conflict.json()["detail"]["state"] == "queued"

    cancelled = client.delete(f"/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert not job_dir.exists()
    assert client.get(f"/jobs/{job_id}").json()["state"] == "cancelled"
    assert client.get(f"/jobs/{job_id}/artifact").json()["code"] == "E_NO_RESULT"

    assert client.delete(f"/jobs/{job_id}").status_code == 204
    assert client.get(f"/jobs/{job_id}").status_code == 404


def test_calibration_optional_for_global_scale(client: TestClient) -> None:
    assert client.post("/quantize", **submission(conv_model_bytes(), qconfig=GLOBAL_SCALE)).status_code == 202
    relay = client.post("/quantize", **submission(conv_model_bytes(), qconfig='{"preset": "relay"}'))
    assert relay.status_code == 202


def test_list_jobs_paginates_newest_first(client: TestClient) -> None:
    ids = [
        client.post("/quantize", **submission(conv_model_bytes(), qconfig=GLOBAL_SCALE)).json()["job_id"]
        for _ in range(3)
    ]
    first = client.get("/jobs", params={"limit": 2}).json()
    assert first["total"] == 3 and [j["id"] for j in first["items"]] == ids[:0:-1]
    second = client.get(first["next"]).json()
    assert [j["id"] for j in second["items"]] == ids[:1] and second["next"] is None
    assert client.get("/jobs", params={"limit": 1000}).status_code == 422


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"], body
    return body["detail"]


def test_model_that_is_not_onnx_is_422(client: TestClient) -> None:
    garbage = submission(b"\x00garbage" * 10, qconfig=GLOBAL_SCALE)
    detail = _problem(client.post("/quantize", **garbage), 422, "E_MODEL_INVALID")
    assert detail["field"] == "model"


def test_missing_model_field_is_422(client: TestClient) -> None:
    detail = _problem(client.post("/quantize", data={"qconfig": "{}"}), 422, "E_REQUEST")
    assert detail["field"] == "model"


@pytest.mark.parametrize(
    ("qconfig", "field"),
    [
        ('{"nbit_input": 99}', "nbit_input"),
        ('{"calibrate_mod": "max"}', "calibrate_mod"),
        ("{not json", "qconfig"),
    ],
)
def test_bad_qconfig_is_422_naming_the_field(client: TestClient, qconfig: str, field: str) -> None:
    detail = _problem(
        client.post("/quantize", **submission(conv_model_bytes(), qconfig=qconfig)), 422, "E_QCONFIG"
    )
    assert detail["field"] == field


@pytest.mark.parametrize("qconfig", [MAX_MODE, "{}", None])
def test_calibration_required_unless_global_scale(client: TestClient, qconfig: str | None) -> None:
    response = client.post("/quantize", **submission(conv_model_bytes(), qconfig=qconfig))
    assert _problem(response, 422, "E_CALIBRATION")["field"] == "calibration"
    assert "global_scale" in response.json()["message"]


def _object_array_npz() -> bytes:
    return npz_bytes(x=np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize(
    ("calibration", "named"),
    [
        (npz_bytes(data=calibration_samples()), "x"),  # the model input is missing
        (npz_bytes(x=calibration_samples(), extra=calibration_samples()), "extra"),
        (npz_bytes(x=calibration_samples()[0]), "x"),  # rank 3, model input is rank 4
        (npz_bytes(x=np.zeros((4, 3, 8, 8), np.float32)), "x"),  # spatial dims differ
        (npz_bytes(x=calibration_samples().astype(np.int32)), "x"),
        (_object_array_npz(), "x"),
    ],
    ids=["missing-input", "extra-array", "wrong-rank", "wrong-shape", "int-dtype", "pickled-objects"],
)
def test_calibration_mismatch_is_422_naming_the_input(
    client: TestClient, calibration: bytes, named: str
) -> None:
    response = client.post("/quantize", **submission(conv_model_bytes(), calibration, MAX_MODE))
    detail = _problem(response, 422, "E_CALIBRATION")
    assert detail["input"] == named and detail["field"] == "calibration"


def test_per_sample_calibration_is_accepted(client: TestClient) -> None:
    feeds = {f"{k}/x": sample[None] for k, sample in enumerate(calibration_samples(3))}
    response = client.post("/quantize", **submission(conv_model_bytes(), npz_bytes(**feeds), MAX_MODE))
    assert response.status_code == 202, response.text


def test_per_sample_feed_missing_an_input_is_422_naming_input_and_feed(client: TestClient) -> None:
    feeds = {"0/x": calibration_samples(1), "2/x": calibration_samples(1)}
    response = client.post("/quantize", **submission(conv_model_bytes(), npz_bytes(**feeds), MAX_MODE))
    detail = _problem(response, 422, "E_CALIBRATION")
    assert (detail["input"], detail["feed"]) == ("x", 1)


def test_unsupported_op_is_422_before_queueing(client: TestClient) -> None:
    detail = _problem(
        client.post("/quantize", **submission(custom_op_model_bytes())), 422, "E_UNSUPPORTED_OP"
    )
    assert detail["ops"] == {"Frobnicate": 1} and detail["field"] == "model"
    assert client.get("/jobs").json()["total"] == 0


def test_input_without_a_declared_tensor_shape_is_422(client: TestClient) -> None:
    """A sequence input passes onnx's checker but has no tensor shape to compile for."""
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["x"], ["y"])],
        "sequence_input",
        [helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, INPUT_SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    detail = _problem(client.post("/quantize", **submission(model)), 422, "E_MODEL_INVALID")
    assert detail == {"field": "model", "input": "x"}


def test_calibration_that_is_not_npz_is_422(client: TestClient) -> None:
    response = client.post("/quantize", **submission(conv_model_bytes(), b"not a zip at all", MAX_MODE))
    assert _problem(response, 422, "E_CALIBRATION")["field"] == "calibration"


def test_rejected_submission_leaves_no_job_or_files(client: TestClient, settings: Settings) -> None:
    client.post("/quantize", **submission(conv_model_bytes(), npz_bytes(y=calibration_samples()), MAX_MODE))
    assert client.get("/jobs").json()["total"] == 0
    assert not any((settings.storage_dir / "jobs").iterdir())


def test_upload_over_a_part_limit_is_413(make_settings) -> None:
    settings = make_settings(max_model_bytes=100)
    with TestClient(create_app(settings)) as client:
        too_large = submission(conv_model_bytes(), qconfig=GLOBAL_SCALE)
        detail = _problem(client.post("/quantize", **too_large), 413, "E_TOO_LARGE")
        assert detail["field"] == "model"


def _chunked_multipart(size: int):
    yield b'--b\r\nContent-Disposition: form-data; name="model"; filename="m.onnx"\r\n\r\n'
    for _ in range(size // 65536):
        yield b"\0" * 65536
    yield b"\r\n--b--\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_body_over_the_total_limit_is_413_before_parsing(make_settings, framing: str) -> None:
    settings = make_settings(max_model_bytes=100, max_calibration_bytes=100)
    size = 2 * 1024 * 1024
    with TestClient(create_app(settings)) as client:
        if framing == "chunked":
            headers = {"content-type": "multipart/form-data; boundary=b"}
            response = client.post("/quantize", content=_chunked_multipart(size), headers=headers)
            assert "content-length" not in response.request.headers
        else:
            response = client.post("/quantize", **submission(b"\x00" * size, qconfig=GLOBAL_SCALE))
        assert _problem(response, 413, "E_TOO_LARGE")["field"] == "request body"


def test_bearer_token_when_api_token_is_set(make_settings) -> None:
    settings = make_settings(api_token="s3cret")
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        for method, path in (("GET", "/jobs"), ("GET", "/qconfig/schema"), ("POST", "/quantize")):
            response = client.request(method, path)
            _problem(response, 401, "E_UNAUTHORIZED")
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = client.get("/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert client.get("/jobs", headers=good).status_code == 200
        quantize = submission(conv_model_bytes(), qconfig=GLOBAL_SCALE)
        posted = client.post("/quantize", headers=good, **quantize)
        assert posted.status_code == 202


def test_readyz_is_503_when_redis_is_down(make_settings) -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        detail = _problem(client.get("/readyz"), 503, "E_NOT_READY")
        assert detail["redis"] is False


def test_the_api_never_imports_tvm(settings: Settings, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from service.app import create_app\n"
        "from worker.runtime.settings import Settings\n"
        f"app = create_app(Settings(redis_url={settings.redis_url!r}, storage_dir={str(tmp_path)!r}))\n"
        "with TestClient(app) as c:\n"
        "    assert c.get('/qconfig/schema').status_code == 200\n"
        "loaded = sorted(m for m in sys.modules if m == 'tvm' or m.startswith('tvm.'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_pipeline_error_code_has_an_http_status() -> None:
    """worker/errors.py carries codes only; the service maps each one (a new code must be mapped)."""
    from service.problems import STATUS_OF_CODE
    from worker import errors

    def family(cls: type) -> list[type]:
        return [cls, *(c for sub in cls.__subclasses__() for c in family(sub))]

    codes = {cls.code for cls in family(errors.QuantizeError)}
    assert codes == set(STATUS_OF_CODE)
    assert all(not hasattr(cls, "http_status") for cls in family(errors.QuantizeError))


def test_a_submission_that_cannot_be_queued_leaves_no_record(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.exceptions import OperationalError

    def unreachable(*args: object, **kwargs: object) -> None:
        raise OperationalError("Error 111 connecting to the broker")

    monkeypatch.setattr(client.app.state.context.celery, "send_task", unreachable)
    response = client.post("/quantize", **submission(conv_model_bytes(), qconfig=GLOBAL_SCALE))
    assert _problem(response, 503, "E_UNAVAILABLE") == {}
    assert client.get("/jobs").json()["total"] == 0
    assert not any((settings.storage_dir / "jobs").iterdir())
