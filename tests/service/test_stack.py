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


def _serve(tmp_path: Path, port: int, name: str = "serve") -> tuple[subprocess.Popen, Path, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_TOKEN")}
    env["STORAGE_DIR"] = str(tmp_path / "store")
    stdout, stderr = tmp_path / f"{name}.stdout", tmp_path / f"{name}.stderr"
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "serve", "--port", str(port), "--workers", "1"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
        )
    return proc, stdout, stderr


def _wait_ready(proc: subprocess.Popen, port: int, stderr: Path, timeout: float = 180) -> httpx.Response:
    deadline = time.monotonic() + timeout
    ready = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            if ready.status_code == 200:
                return ready
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready: {ready and ready.text} {stderr.read_text()[-3000:]}")


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += children - found
            found |= children
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_serve_starts_and_stops_the_whole_stack(tmp_path: Path) -> None:
    port = free_port()
    proc, stdout, stderr = _serve(tmp_path, port)
    try:
        ready = _wait_ready(proc, port, stderr)
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


def test_serve_restarts_a_crashed_child_refuses_a_second_serve_and_takes_its_children_along(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc, _, stderr = _serve(tmp_path, port)
    try:
        _wait_ready(proc, port, stderr)
        api = next(
            p
            for p in _descendants(proc.pid)
            if b" api " in Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")
        )
        os.kill(api, signal.SIGKILL)
        _wait_ready(proc, port, stderr, timeout=120)  # the API came back
        assert "api (pid" in stderr.read_text() and "restarting" in stderr.read_text()

        second, _, second_err = _serve(tmp_path, free_port(), name="second")
        assert second.wait(60) == 1
        assert "is in use by another `tvmq serve`" in second_err.read_text()

        family = _descendants(proc.pid)
        assert len(family) >= 4  # redis-server, a worker and its pool process, the API
        proc.kill()  # no chance to stop anything itself
        deadline = time.monotonic() + 60
        while _alive(family) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(family), [Path(f"/proc/{p}/cmdline").read_bytes() for p in _alive(family)]
    finally:
        if proc.poll() is None:
            proc.kill()
