"""Access to the API: the token and the size limits are checked while the body streams in, not
after it was spooled; a rate limit; each token sees only its own jobs; /readyz tells a caller
without a token nothing but ready / not ready; the OpenAPI document matches the API."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient
from svc_helpers import conv_model_bytes, submission

from service.app import create_app
from worker.runtime.settings import Settings

pytestmark = pytest.mark.redis

GLOBAL_SCALE = json.dumps({"calibrate_mode": "global_scale"})

MIB = 1024 * 1024
HUGE = 300 * MIB


def _stream_upload(settings: Settings, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """POST a 300 MB multipart model to the ASGI app, 1 MiB per receive(); (status, bytes read)."""
    app = create_app(settings)
    boundary = b"xyz"
    head = b'--xyz\r\nContent-Disposition: form-data; name="model"; filename="m.onnx"\r\n\r\n'
    read = 0
    status = 0

    async def receive() -> dict:
        nonlocal read
        if read == 0:
            read += len(head)
            return {"type": "http.request", "body": head, "more_body": True}
        read += MIB
        return {"type": "http.request", "body": b"\0" * MIB, "more_body": read < HUGE}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/quantize",
        "raw_path": b"/quantize",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
        "headers": [(b"content-type", b"multipart/form-data; boundary=" + boundary), *headers],
    }
    asyncio.run(app(scope, receive, send))
    return status, read


def test_an_anonymous_upload_is_refused_before_its_body_is_read(make_settings) -> None:
    status, read = _stream_upload(make_settings(api_token="s3cret"), [])
    assert status == 401
    assert read == 0


def test_a_part_over_its_limit_is_refused_while_it_streams(make_settings) -> None:
    settings = make_settings(api_token="s3cret", max_model_bytes=MIB)
    status, read = _stream_upload(settings, [(b"authorization", b"Bearer s3cret")])
    assert status == 413
    assert read <= 3 * MIB  # not the 300 MB (nor the 256 MiB + 512 MiB total the body may have)


def test_the_rate_limit_is_429_with_retry_after(make_settings) -> None:
    settings = make_settings(rate_limit=3, rate_limit_window=60)
    with TestClient(create_app(settings)) as client:
        assert [client.get("/jobs").status_code for _ in range(3)] == [200] * 3
        limited = client.get("/jobs")
        assert limited.status_code == 429 and limited.json()["code"] == "E_RATE_LIMITED"
        assert 1 <= int(limited.headers["retry-after"]) <= 61
        assert client.get("/healthz").status_code == 200  # health checks are not limited


def test_each_token_sees_only_its_own_jobs(make_settings) -> None:
    settings = make_settings(api_tokens="alice:token-a,bob:token-b")
    alice, bob = ({"Authorization": f"Bearer {t}"} for t in ("token-a", "token-b"))
    with TestClient(create_app(settings)) as client:
        job_id = client.post(
            "/quantize", headers=alice, **submission(conv_model_bytes(), qconfig=GLOBAL_SCALE)
        ).json()["job_id"]
        assert client.get(f"/jobs/{job_id}", headers=alice).status_code == 200
        for method in ("GET", "DELETE"):
            foreign = client.request(method, f"/jobs/{job_id}", headers=bob)
            assert foreign.status_code == 404 and foreign.json()["code"] == "E_NOT_FOUND"
        assert client.get(f"/jobs/{job_id}/artifact", headers=bob).status_code == 404
        assert client.get("/jobs", headers=bob).json()["total"] == 0
        assert [j["id"] for j in client.get("/jobs", headers=alice).json()["items"]] == [job_id]
        assert client.get("/jobs", headers={"Authorization": "Bearer token-c"}).status_code == 401


def test_tokens_file(make_settings, tmp_path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# name token\ncarol token-c\n")
    with TestClient(create_app(make_settings(api_tokens_file=path))) as client:
        assert client.get("/jobs", headers={"Authorization": "Bearer token-c"}).status_code == 200
        assert client.get("/jobs").status_code == 401


def test_readyz_tells_a_caller_without_a_token_only_ready_or_not(make_settings) -> None:
    settings = make_settings(api_token="s3cret")
    with TestClient(create_app(settings)) as client:  # no worker consumes this queue
        anonymous = client.get("/readyz")
        assert anonymous.status_code == 503
        assert anonymous.json() == {"code": "E_NOT_READY", "message": "not ready", "detail": {}}
        known = client.get("/readyz", headers={"Authorization": "Bearer s3cret"})
        assert known.status_code == 503 and known.json()["detail"] == {"redis": True, "workers": []}


def test_an_unreachable_redis_is_503_with_retry_after(make_settings) -> None:
    with TestClient(create_app(make_settings(redis_url="redis://127.0.0.1:1/0"))) as client:
        response = client.get("/jobs")
        assert response.status_code == 503 and response.json()["code"] == "E_UNAVAILABLE"
        assert response.headers["retry-after"]


def test_the_openapi_document_matches_the_api(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert client.get("/report/schema").status_code == 200
    assert "/report/schema" in document["paths"]
    for method, operation in document["paths"]["/jobs/{job_id}"].items():
        assert operation["responses"]["404"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"
        }, method
    assert set(document["components"]["schemas"]["Problem"]["required"]) == {"code", "message", "detail"}
    not_allowed = client.put(f"/jobs/{'0' * 32}")
    assert not_allowed.status_code == 405
    assert {"GET", "DELETE"} <= {m.strip() for m in not_allowed.headers["allow"].split(",")}
    assert json.loads(not_allowed.text)["code"] == "E_METHOD"
