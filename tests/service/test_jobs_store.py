"""Job records on the real Redis: the state machine that keeps re-delivered runs harmless."""

from __future__ import annotations

import os
import time

import pytest

from worker.runtime.jobs import JobStore, new_job_id
from worker.runtime.settings import Settings
from worker.runtime.storage import BlobStore
from worker.runtime.tasks import execute_job

pytestmark = pytest.mark.redis


@pytest.fixture
def store(settings: Settings) -> JobStore:
    return JobStore.from_settings(settings)


@pytest.fixture
def blobs(settings: Settings) -> BlobStore:
    return BlobStore(settings.storage_dir)


def _new(store: JobStore) -> str:
    job_id = new_job_id()
    store.create(job_id, qconfig="{}", has_calibration=False, model_name="m.onnx")
    return job_id


def test_a_run_moves_a_job_through_its_states(store: JobStore) -> None:
    job_id = _new(store)
    attempt = store.start(job_id)
    assert attempt == 1
    assert store.progress(job_id, attempt, "calibrate", 25)
    job = store.get(job_id)
    assert (job.state, job.stage, job.progress) == ("running", "calibrate", 25) and job.started_at
    assert store.finish(job_id, attempt, "succeeded")
    job = store.get(job_id)
    assert (job.state, job.progress, job.error_code) == ("succeeded", 100, None) and job.finished_at


def test_a_finished_job_is_not_claimed_or_overwritten_again(store: JobStore) -> None:
    job_id = _new(store)
    attempt = store.start(job_id)
    store.finish(job_id, attempt, "failed", code="E_IMPORT", message="bad op")
    assert store.start(job_id) is None
    assert not store.finish(job_id, attempt, "succeeded")
    assert not store.progress(job_id, attempt, "build", 65)
    job = store.get(job_id)
    assert (job.state, job.error_code, job.error_message) == ("failed", "E_IMPORT", "bad op")


def test_a_redelivered_running_job_supersedes_the_lost_run(store: JobStore) -> None:
    job_id = _new(store)
    lost = store.start(job_id)
    store.note_loss(job_id, "signal 9 (SIGKILL)")
    current = store.start(job_id)
    assert current == lost + 1
    assert not store.progress(job_id, lost, "build", 65)
    assert not store.finish(job_id, lost, "failed", code="E_INTERNAL", message="late")
    assert store.finish(job_id, current, "succeeded")
    assert store.get(job_id).state == "succeeded"


def test_cancel_only_active_jobs(store: JobStore) -> None:
    queued, running, done = _new(store), _new(store), _new(store)
    attempt = store.start(running)
    store.finish(done, store.start(done), "succeeded")
    assert store.cancel(queued) and store.cancel(running) and not store.cancel(done)
    assert store.start(queued) is None
    assert not store.progress(running, attempt, "build", 65)
    assert [store.get(j).state for j in (queued, running, done)] == ["cancelled", "cancelled", "succeeded"]


def test_a_delivery_while_another_run_is_alive_is_skipped(store: JobStore) -> None:
    job_id = _new(store)
    assert store.start(job_id) == 1
    assert store.start(job_id) is None  # kombu restored the message of a run that is still alive
    store.note_loss(job_id, "signal 9 (SIGKILL)")  # the worker saw the run's process die
    assert store.start(job_id) == 2


def test_a_message_of_an_older_dispatch_is_skipped(store: JobStore) -> None:
    lost = JobStore(store.redis, prefix=store.prefix, lease=0.0)
    job_id = _new(lost)
    lost.start(job_id)
    time.sleep(0.01)
    assert lost.lost_jobs(queued_in_broker=[]) == [(job_id, 2)]
    assert lost.start(job_id, dispatch=1) is None
    assert lost.start(job_id, dispatch=2) == 2
    assert "no heartbeat" in lost.redis.hget(lost.key(job_id), "losses")


def test_a_queued_job_is_resent_only_when_its_message_is_gone(store: JobStore) -> None:
    lost = JobStore(store.redis, prefix=store.prefix, lease=0.0)
    job_id = _new(lost)
    time.sleep(0.01)
    assert lost.lost_jobs(queued_in_broker=[job_id]) == []
    assert lost.lost_jobs(queued_in_broker=[]) == [(job_id, 2)]


def test_deliveries_are_bounded(store: JobStore) -> None:
    bounded = JobStore(store.redis, prefix=store.prefix, max_deliveries=2)
    job_id = _new(bounded)
    for _ in range(2):
        assert bounded.start(job_id)
        bounded.note_loss(job_id, "signal 9 (SIGKILL)")
    assert bounded.start(job_id) is None
    job = bounded.get(job_id)
    assert (job.state, job.error_code) == ("failed", "E_WORKER_LOST")
    assert "started 2 times" in job.error_message and "SIGKILL" in job.error_message
    assert job_id not in bounded.redis.zrange(bounded.active_key, 0, -1)


def test_sweep_removes_old_finished_jobs_and_orphaned_files(store: JobStore, blobs: BlobStore) -> None:
    done, queued = _new(store), _new(store)
    store.finish(done, store.start(done), "succeeded")
    for job_id in (done, queued):
        blobs.prepare_inputs(job_id)
    orphan = new_job_id()
    blobs.prepare_inputs(orphan)
    old = time.time() - 3600
    os.utime(blobs.job_dir(orphan), (old, old))

    assert store.sweep(retention=7200, blobs=blobs) == []
    time.sleep(0.01)
    removed = store.sweep(retention=0.001, blobs=blobs)
    assert set(removed) == {done, orphan}
    assert store.get(done) is None and not blobs.job_dir(done).exists() and not blobs.job_dir(orphan).exists()
    assert store.get(queued).state == "queued" and blobs.job_dir(queued).exists()
    assert [j.id for j in store.recent(0, 10)[0]] == [queued]


def test_the_task_never_reruns_a_finished_job(store: JobStore, blobs: BlobStore, settings: Settings) -> None:
    job_id = _new(store)
    store.finish(job_id, store.start(job_id), "succeeded")
    artifact = blobs.artifact_path(job_id)
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"built")

    assert execute_job(job_id, store, blobs, settings) == {"job_id": job_id, "ran": False}
    assert artifact.read_bytes() == b"built"
    job = store.get(job_id)
    assert (job.state, job.attempt) == ("succeeded", 1)


def test_the_task_skips_cancelled_and_unknown_jobs(
    store: JobStore, blobs: BlobStore, settings: Settings
) -> None:
    job_id = _new(store)
    store.cancel(job_id)
    assert execute_job(job_id, store, blobs, settings)["ran"] is False
    assert execute_job(new_job_id(), store, blobs, settings)["ran"] is False
    assert store.get(job_id).state == "cancelled"
