"""Process supervision for `tvmq serve`, `tvmq worker` and `tvmq api`.

`serve` is the one-machine stack without Docker: its own redis-server (unless REDIS_URL is set), N
Celery workers and uvicorn as child processes in their own sessions, so a Ctrl-C reaches only this
supervisor, which then stops them in order (API, workers, Redis) instead of all dying at once. A
child that exits on its own is restarted with back-off; every child gets SIGTERM from the kernel if
the supervisor dies (even by SIGKILL), and a lock on STORAGE_DIR keeps a second `serve` off the
same Redis data and job files while any process of the first is alive.
"""

from __future__ import annotations

import fcntl
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
RESTART_BACKOFF_MIN, RESTART_BACKOFF_MAX = 1.0, 30.0  # seconds before restarting a crashed child
RESTART_BACKOFF_RESET = 60.0  # seconds a child must live for its back-off to start again from 1 s


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


def _redis_command(data_dir: Path, port: int) -> list[str]:
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed: run scripts/setup, or set REDIS_URL")
    data_dir.mkdir(parents=True, exist_ok=True)
    # appendonly + fsync on every write: jobs survive a restart of the stack, as the design promises
    # (job records change a few times per job, so the cost is small).
    cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    return [*cmd, "--appendonly", "yes", "--appendfsync", "always"]


class Child:
    """One supervised process: restarted with back-off when it exits on its own."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], lock_fd: int) -> None:
        self.name, self.argv, self.env, self.lock_fd = name, argv, env, lock_fd
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.backoff = RESTART_BACKOFF_MIN
        self.restart_at: float | None = None

    def start(self) -> None:
        # Its own session (a Ctrl-C reaches only the supervisor), killed with the supervisor, and
        # holding the STORAGE_DIR lock for as long as it lives.
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            start_new_session=True,
            pass_fds=(self.lock_fd,),
            preexec_fn=lambda: die_with_parent(signal.SIGTERM),
            stdout=subprocess.DEVNULL if self.name == "redis-server" else None,
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    def watch(self) -> None:
        """Restart the process if it died: after 1 s, doubling to 30 s while it keeps dying young."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                print(f"tvmq: restarting {self.name}", file=sys.stderr, flush=True)
                self.start()
            return
        if self.proc is None or self.proc.poll() is None:
            return
        if now - self.started_at > RESTART_BACKOFF_RESET:
            self.backoff = RESTART_BACKOFF_MIN
        print(
            f"tvmq: {self.name} (pid {self.proc.pid}) exited with status {self.proc.returncode}; "
            f"restarting it in {self.backoff:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        self.restart_at = now + self.backoff
        self.backoff = min(self.backoff * 2, RESTART_BACKOFF_MAX)

    def stop(self) -> None:
        self.restart_at = None
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _lock_storage(storage_dir: Path) -> int:
    """An exclusive lock on STORAGE_DIR/serve.lock, held by this process and its children: a second
    `serve` on the same directory (its Redis append-only file, its job files) refuses to start."""
    storage_dir.mkdir(parents=True, exist_ok=True)
    path = storage_dir / "serve.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RuntimeError(
            f"STORAGE_DIR {storage_dir} is in use by another `tvmq serve` (pid {holder}, or processes it "
            "left running); stop it first, or give this one another STORAGE_DIR"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def run_serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> int:
    settings = get_settings()
    storage = settings.storage_dir.resolve()
    env = dict(os.environ, STORAGE_DIR=str(storage))
    children: list[Child] = []  # in start order; stopped in reverse

    def on_signal(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        lock = _lock_storage(storage)
        if "REDIS_URL" not in os.environ:
            redis_port = free_port()
            env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            children.append(Child("redis-server", _redis_command(storage / "redis", redis_port), env, lock))
            children[-1].start()
            _wait_until(redis.Redis.from_url(env["REDIS_URL"]).ping, "redis-server", children[-1].proc)
            print(f"tvmq: redis-server at {env['REDIS_URL']}", flush=True)
        cli = [sys.executable, "-m", "worker.cli"]
        for n in range(workers):
            children.append(Child(f"worker {n + 1}", [*cli, "worker", "--concurrency=1"], env, lock))
            children[-1].start()
        api = Child("api", [*cli, "api", "--host", host, "--port", str(port)], env, lock)
        children.append(api)
        api.start()
        url = f"http://{host}:{port}"
        _wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, "the API", api.proc)
        print(
            f"tvmq: serving on {url} (docs at {url}/docs) with {workers} worker(s); Ctrl-C stops", flush=True
        )
        while True:
            for child in children:
                child.watch()
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("tvmq: stopping", file=sys.stderr, flush=True)
        return 0
    except RuntimeError as exc:
        print(f"tvmq: {exc}", file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not abandon the children
        for child in reversed(children):
            child.stop()
