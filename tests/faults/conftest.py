"""Fixtures of the fault tests: each test gets its own redis-server (restartable, AOF on), real
`tvmq worker` processes and the API, all configured by one Settings through the environment."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from worker.runtime.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from processes import RedisServer, Worker, worker_env

pytestmark = pytest.mark.slow


@dataclass
class FaultStack:
    redis: RedisServer
    settings: Settings
    api: TestClient
    logs: Path
    workers: list[Worker] = field(default_factory=list)

    def add_worker(self, **env: str) -> Worker:
        worker = Worker(worker_env(self.settings, **env), self.logs / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        return worker

    def worker_logs(self) -> str:
        return "\n".join(w.output()[-4000:] for w in self.workers)


@pytest.fixture
def fault_stack(tmp_path: Path) -> Iterator[Callable[..., FaultStack]]:
    made: list[FaultStack] = []
    clients: list[TestClient] = []

    def make(workers: int = 1, **overrides: Any) -> FaultStack:
        server = RedisServer(tmp_path / "redis")
        server.start()
        values: dict[str, Any] = {
            "redis_url": server.url,
            "storage_dir": tmp_path / "store",
            "api_token": None,
            "job_heartbeat": 1.0,
            "job_lease": 5.0,
            **overrides,
        }
        settings = Settings(**values)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        stack = FaultStack(server, settings, client, tmp_path)
        made.append(stack)
        for _ in range(workers):
            stack.add_worker()
        return stack

    yield make
    for stack in made:
        for worker in stack.workers:
            worker.stop()
    for client in clients:
        client.__exit__(None, None, None)
    for stack in made:
        if stack.redis.proc and stack.redis.proc.poll() is None:
            stack.redis.stop()
