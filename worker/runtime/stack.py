"""Process supervision for `tvmq serve`, `tvmq worker` and `tvmq api`.

`serve` is the one-machine stack without Docker: its own redis-server (unless REDIS_URL is set), N
Celery workers and uvicorn as child processes in their own sessions, so a Ctrl-C reaches only this
supervisor, which then stops them in order (API, workers, Redis) instead of all dying at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx
import redis

from worker.runtime.settings import get_settings

STOP_TIMEOUT = 20.0  # seconds a child gets to exit after SIGTERM before it is killed
START_TIMEOUT = 60.0  # seconds redis-server and the API get to answer


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent exits (Linux), so nothing is left
    running with parent 1 when a supervisor or a worker is killed; no-op elsewhere."""
    import ctypes
    import ctypes.util

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os.kill(os.getpid(), sig)


def run_worker(concurrency: int = 1, loglevel: str = "info") -> int:
    from worker.runtime.tasks import app

    app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            f"--hostname=tvmq-{os.getpid()}@%h",
        ]
    )
    return 0


def run_api(host: str = "127.0.0.1", port: int = 8000) -> int:
    import uvicorn

    uvicorn.run("service.app:create_app", factory=True, host=host, port=port)
    return 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for redis and tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(check: Callable[[], object], what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        try:
            if check():
                return
        except (OSError, redis.RedisError, httpx.HTTPError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {START_TIMEOUT:.0f} s")


def _start_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed: run scripts/setup, or set REDIS_URL")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # appendonly: jobs survive a restart of the stack, as the design promises.
    cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--appendonly", "yes"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    _wait_until(client.ping, "redis-server", proc)
    return proc, url


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> int:
    settings = get_settings()
    env = dict(os.environ, STORAGE_DIR=str(settings.storage_dir.resolve()))
    started: list[subprocess.Popen] = []  # in start order; stopped in reverse

    def on_signal(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if "REDIS_URL" not in os.environ:
            proc, env["REDIS_URL"] = _start_redis(settings.storage_dir.resolve() / "redis")
            started.append(proc)
            print(f"tvmq: redis-server at {env['REDIS_URL']}", flush=True)
        cli = [sys.executable, "-m", "worker.cli"]
        for _ in range(workers):
            started.append(
                subprocess.Popen([*cli, "worker", "--concurrency=1"], env=env, start_new_session=True)
            )
        api = subprocess.Popen(
            [*cli, "api", "--host", host, "--port", str(port)], env=env, start_new_session=True
        )
        started.append(api)
        url = f"http://{host}:{port}"
        _wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, "the API", api)
        print(
            f"tvmq: serving on {url} (docs at {url}/docs) with {workers} worker(s); Ctrl-C stops", flush=True
        )
        while all(proc.poll() is None for proc in started):
            time.sleep(0.5)
        dead = next(proc for proc in started if proc.poll() is not None)
        print(
            f"tvmq: {' '.join(map(str, dead.args[:4]))} exited ({dead.returncode}); stopping", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("tvmq: stopping", file=sys.stderr, flush=True)
        return 0
    except RuntimeError as exc:
        print(f"tvmq: {exc}", file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not abandon the children
        _stop(list(reversed(started)))
