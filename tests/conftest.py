"""Shared fixtures. `redis_url`: a real Redis for the whole session — REDIS_URL when set (scripts/test
sets it), else a redis-server started here on a free port and stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from worker.runtime.stack import free_port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (scripts/setup installs it) and REDIS_URL is not set")
    data_dir: Path = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"redis-server on port {port} did not answer")
    yield url
    proc.terminate()
    proc.wait(10)


# the `chromium` fixture for page tests (tests/chromium.py)
from tests.chromium import chromium  # noqa: E402, F401
