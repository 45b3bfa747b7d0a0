"""Fixtures for the service tests: Settings isolated per test (own key prefix, queue and storage
dir) on the session's real Redis, an API client, and a real Celery worker started in-process on
that Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from worker.runtime.settings import Settings


@pytest.fixture
def make_settings(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        tag = uuid.uuid4().hex[:8]
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "storage_dir": tmp_path_factory.mktemp("store"),
            "redis_prefix": f"tvmq-test-{tag}",
            "celery_queue": f"tvmq-test-{tag}",
            "api_token": None,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """An API with no worker consuming its queue: submitted jobs stay queued."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Settings]]:
    """The API plus one real Celery worker (solo pool, in this process) on the real Redis."""
    from celery.contrib.testing.worker import start_worker

    from worker.runtime.tasks import make_worker_app

    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=redis_url,
        storage_dir=tmp_path_factory.mktemp("live-store"),
        redis_prefix=f"tvmq-live-{tag}",
        celery_queue=f"tvmq-live-{tag}",
        api_token=None,
    )
    worker_app = make_worker_app(settings)
    with (
        start_worker(
            worker_app,
            pool="solo",
            concurrency=1,
            loglevel="WARNING",
            queues=[settings.celery_queue],
            perform_ping_check=False,  # the ping needs a result backend; job records need none
        ),
        TestClient(create_app(settings)) as test_client,
    ):
        yield test_client, settings
