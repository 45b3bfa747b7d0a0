"""`tvmq serve` brings up its own redis-server, a worker and the API, and SIGTERM stops all of them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from worker.runtime.stack import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_serve_starts_and_stops_the_whole_stack(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["STORAGE_DIR"] = str(tmp_path / "store")
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), "--workers", "1"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, stderr.read_text()[-3000:]
        assert len(ready.json()["workers"]) == 1
        printed = stdout.read_text()
        assert f"serving on http://127.0.0.1:{port}" in printed
        redis_port = int(re.search(r"redis-server at redis://127\.0\.0\.1:(\d+)/", printed).group(1))
        assert (tmp_path / "store" / "redis").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(90)
    assert code == 0, stderr.read_text()[-3000:]
    assert not _listening(port) and not _listening(redis_port)
