"""Real processes for the fault tests: a redis-server that can be stopped and restarted on its
port with its append-only file, `tvmq worker` subprocesses, and the API in this process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from worker.runtime.settings import Settings
from worker.runtime.stack import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_until(check: Callable[[], object], what: str, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, redis.RedisError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


class RedisServer:
    """redis-server with AOF on a fixed port, so a restart keeps the URL and the data."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is not installed (scripts/setup installs it)"
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        cmd += ["--appendonly", "yes", "--save", ""]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        wait_until(redis.Redis.from_url(self.url).ping, "redis-server answers", 20)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: Redis flushes its append-only file)."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(20)

    def restart(self, down_for: float) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_", "MAX_", "API_"))}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[name.upper()] = str(value)
    env.update(extra)
    env["PYTHONPATH"] = str(REPO)
    return env


class Worker:
    """One `tvmq worker --concurrency 1` process (prefork: one pool process runs the jobs)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "worker", "--concurrency", "1", "--loglevel", "info"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def pool_children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def kill_pool_child(self) -> int:
        (child,) = self.pool_children()
        os.kill(child, signal.SIGKILL)
        return child

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # cold shutdown: the tests do not wait for jobs
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def job_state(api, job_id: str) -> dict:
    return api.get(f"/jobs/{job_id}").json()


def wait_job(api, job_id: str, until: Callable[[dict], bool], what: str, timeout: float) -> dict:
    """Poll the job until `until(job)`; fails naming `what` and the last state past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        job = job_state(api, job_id)
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: job still {job['state']} ({job['stage']}) after {timeout:.0f} s")
        time.sleep(0.1)


def finished(job: dict) -> bool:
    return job["state"] not in ("queued", "running")
