"""Job records in Redis: our own source of truth for a job's state.

Celery reports PENDING for any id it has never seen, so the API never trusts AsyncResult; it reads
these records instead. Every state change after creation is one Lua script, so a cancelled job
cannot be flipped back to running, and a re-delivered or stale run (its `attempt` no longer the
current one) cannot overwrite a finished record.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import redis
from pydantic import BaseModel

from worker.runtime.settings import Settings
from worker.runtime.storage import BlobStore

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running"})
TIMEOUT_CODE = "E_TIMEOUT"
STALE_GRACE = 60.0  # seconds past the hard time limit before a `running` record is declared lost

_START = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state ~= 'queued' and state ~= 'running' then return -2 end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1], 'stage', ARGV[2], 'progress', 0,
           'error_code', '', 'error_message', '')
return attempt
"""

_UPDATE_IF_CURRENT = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1])
return 1
"""


class Job(BaseModel):
    id: str
    state: State
    stage: str | None = None
    progress: int = 0
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempt: int = 0
    qconfig: str = ""
    has_calibration: bool = False
    model_name: str = ""

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Job:
        clean: dict[str, Any] = {k: v for k, v in data.items() if v != ""}
        clean["has_calibration"] = clean.get("has_calibration") == "1"
        return cls.model_validate(clean)


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Create, advance, read, list and sweep job records."""

    def __init__(self, client: redis.Redis, stale_after: float, prefix: str = "tvmq") -> None:
        self.redis = client
        # A job still `running` this long after it started was killed by the hard time limit or lost
        # with its worker: nothing will ever finish it, so reads report it failed.
        self.stale_after = stale_after
        self.index_key = f"{prefix}:jobs"
        self.prefix = prefix
        self._start = client.register_script(_START)
        self._update = client.register_script(_UPDATE_IF_CURRENT)
        self._cancel = client.register_script(_CANCEL)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        return cls(client, stale_after=settings.job_time_limit + STALE_GRACE, prefix=settings.redis_prefix)

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def create(self, job_id: str, *, qconfig: str, has_calibration: bool, model_name: str) -> Job:
        now = time.time()
        fields = {
            "id": job_id,
            "state": "queued",
            "stage": "queued",
            "progress": 0,
            "created_at": now,
            "attempt": 0,
            "qconfig": qconfig,
            "has_calibration": "1" if has_calibration else "0",
            "model_name": model_name,
        }
        pipe = self.redis.pipeline()
        pipe.hset(self.key(job_id), mapping=fields)
        pipe.zadd(self.index_key, {job_id: now})
        pipe.execute()
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        data = self.redis.hgetall(self.key(job_id))
        if not data:
            return None
        job = Job.from_hash(data)
        if job.state == "running" and job.started_at and time.time() - job.started_at > self.stale_after:
            self.finish(
                job_id,
                job.attempt,
                "failed",
                code=TIMEOUT_CODE,
                message=f"the job ran past the hard time limit or its worker was lost "
                f"(no progress for {self.stale_after:.0f} s); submit it again",
            )
            job = Job.from_hash(self.redis.hgetall(self.key(job_id)))
        return job

    def start(self, job_id: str) -> int | None:
        """Claim a queued (or re-delivered running) job; the attempt number, or None to skip it."""
        attempt = int(self._start(keys=[self.key(job_id)], args=[time.time(), "load"]))
        return attempt if attempt > 0 else None

    def progress(self, job_id: str, attempt: int, stage: str, percent: int) -> bool:
        """Record a stage; False when this run is no longer the job's current one (e.g. cancelled)."""
        return self._update_if_current(job_id, attempt, {"stage": stage, "progress": percent})

    def finish(
        self, job_id: str, attempt: int, state: State, *, code: str | None = None, message: str | None = None
    ) -> bool:
        fields: dict[str, Any] = {"state": state, "finished_at": time.time()}
        if state == "succeeded":
            fields.update(stage="done", progress=100)
        else:
            fields.update(error_code=code or "E_INTERNAL", error_message=message or "")
        return self._update_if_current(job_id, attempt, fields)

    def _update_if_current(self, job_id: str, attempt: int, fields: dict[str, Any]) -> bool:
        args: list[Any] = [attempt]
        for name, value in fields.items():
            args += [name, value]
        return bool(self._update(keys=[self.key(job_id)], args=args))

    def cancel(self, job_id: str) -> bool:
        return bool(self._cancel(keys=[self.key(job_id)], args=[time.time()]))

    def delete(self, job_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(self.key(job_id))
        pipe.zrem(self.index_key, job_id)
        pipe.execute()

    def recent(self, offset: int, limit: int) -> tuple[list[Job], int]:
        """Newest first."""
        ids = self.redis.zrevrange(self.index_key, offset, offset + limit - 1)
        jobs = [job for job in (self.get(job_id) for job_id in ids) if job is not None]
        return jobs, int(self.redis.zcard(self.index_key))

    def sweep(self, retention: float, blobs: BlobStore) -> list[str]:
        """Delete finished jobs older than `retention` seconds with their files, and orphaned files."""
        cutoff = time.time() - retention
        removed = []
        for job_id in self.redis.zrangebyscore(self.index_key, "-inf", cutoff):
            job = self.get(job_id)
            if job is None or (job.finished and (job.finished_at or job.created_at) < cutoff):
                self.delete(job_id)
                blobs.delete(job_id)
                removed.append(job_id)
        for job_id in blobs.job_ids_older_than(retention):
            if not self.redis.exists(self.key(job_id)):
                blobs.delete(job_id)
                removed.append(job_id)
        return removed
