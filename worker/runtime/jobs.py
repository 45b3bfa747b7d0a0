"""Job records in Redis: our own source of truth for a job's state.

Celery reports PENDING for any id it has never seen, so the API never trusts AsyncResult; it reads
these records instead. Every state change after creation is one Lua script, so a cancelled job
cannot be flipped back to running, and a re-delivered or stale run (its `attempt` no longer the
current one) cannot overwrite a finished record.

Two counters make faults harmless. `dispatch` numbers the messages sent for a job: recovery sends a
new one when a job's run is lost, and a message of an older dispatch (Redis re-delivering an
unacknowledged message long after) is skipped, so it cannot supersede the run that replaced it.
`attempt` counts the runs started for the job: past `max_deliveries` the job fails with
E_WORKER_LOST instead of killing worker after worker. While a run is alive it writes `heartbeat`;
a run that stops writing it for `lease` seconds was lost with its worker or its connection, and
`recover` sends the job again.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from typing import Any, Literal

import redis
from pydantic import BaseModel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker.runtime.settings import Settings
from worker.runtime.storage import BlobStore

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running"})

# Codes of failures only the runtime sees (the pipeline's own are in worker/errors.py).
TIMEOUT_CODE = "E_TIMEOUT"
WORKER_LOST_CODE = "E_WORKER_LOST"
MEMORY_CODE = "E_OUT_OF_MEMORY"

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis transport: one list per step, `queue` for step 0

_START = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state ~= 'queued' and state ~= 'running' then return -2 end
if redis.call('HGET', KEYS[1], 'dispatch') ~= ARGV[2] then return -3 end
local heartbeat = tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0')
if state == 'running' and tonumber(ARGV[1]) - heartbeat <= tonumber(ARGV[7]) then return -5 end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
if attempt >= tonumber(ARGV[3]) then
  local losses = redis.call('HGET', KEYS[1], 'losses') or ''
  if losses == '' then losses = 'no cause recorded' end
  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ARGV[1], 'error_code', ARGV[4],
             'error_message', string.format(ARGV[5], attempt, losses))
  redis.call('ZREM', KEYS[2], ARGV[6])
  return -4
end
attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1], 'heartbeat', ARGV[1], 'stage', 'load',
           'progress', 0, 'error_code', '', 'error_message', '', 'run_by', ARGV[8])
return attempt
"""

_UPDATE_IF_CURRENT = """
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'completed_runs', 1)
end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if ARGV[2] == '1' then redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'id')) end
return 1
"""

_FAIL_DISPATCH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'dispatch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ARGV[2], 'error_code', ARGV[3],
           'error_message', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[5])
return 1
"""

_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

_NOTE_LOSS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local losses = redis.call('HGET', KEYS[1], 'losses') or ''
if losses ~= '' then losses = losses .. '; ' end
redis.call('HSET', KEYS[1], 'losses', losses .. ARGV[1], 'heartbeat', 0)
return 1
"""

# A lost job goes back to `queued` under a new dispatch; the caller sends the message.
_REQUEUE_IF_LOST = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
if state == 'running' then
  if now - tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0') <= lease then return 0 end
  local losses = redis.call('HGET', KEYS[1], 'losses') or ''
  if losses ~= '' then losses = losses .. '; ' end
  redis.call('HSET', KEYS[1], 'losses', losses .. ARGV[5])
elseif ARGV[4] == '1' or now - tonumber(redis.call('HGET', KEYS[1], 'queued_at') or '0') <= lease then
  return 0
end
local dispatch = redis.call('HINCRBY', KEYS[1], 'dispatch', 1)
redis.call('HSET', KEYS[1], 'state', 'queued', 'stage', 'requeued', 'progress', 0, 'queued_at', ARGV[1])
return dispatch
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
    dispatch: int = 1
    run_by: str = ""  # host:pid of the process running (or that last ran) the job
    qconfig: str = ""
    has_calibration: bool = False
    has_validation: bool = False
    model_name: str = ""
    owner: str = ""
    #: the latest search trial (trial, of, phase, metric, meets, best) while and after a search runs
    trial: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Job:
        clean: dict[str, Any] = {k: v for k, v in data.items() if v != ""}
        clean["has_calibration"] = clean.get("has_calibration") == "1"
        clean["has_validation"] = clean.get("has_validation") == "1"
        if "trial" in clean:
            clean["trial"] = json.loads(clean["trial"])
        return cls.model_validate(clean)


def new_job_id() -> str:
    return uuid.uuid4().hex


def redis_client(url: str, retry_for: float) -> redis.Redis:
    """A client that retries a command through a Redis restart for about `retry_for` seconds (a
    worker rides out a short outage; the API fails fast with a 503 instead)."""
    retries = max(0, int(retry_for / 1.0))
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


class JobStore:
    """Create, advance, read, list, recover and sweep job records."""

    def __init__(
        self, client: redis.Redis, prefix: str = "tvmq", max_deliveries: int = 3, lease: float = 60.0
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.max_deliveries = max_deliveries
        self.lease = lease
        self.index_key = f"{prefix}:jobs"
        self.active_key = f"{prefix}:active"  # jobs queued or running: what recovery looks at
        self._start = client.register_script(_START)
        self._update = client.register_script(_UPDATE_IF_CURRENT)
        self._fail_dispatch = client.register_script(_FAIL_DISPATCH)
        self._cancel = client.register_script(_CANCEL)
        self._note_loss = client.register_script(_NOTE_LOSS)
        self._requeue = client.register_script(_REQUEUE_IF_LOST)

    @classmethod
    def from_settings(cls, settings: Settings, retry_for: float = 0.0) -> JobStore:
        return cls(
            redis_client(settings.redis_url, retry_for),
            prefix=settings.redis_prefix,
            max_deliveries=settings.max_deliveries,
            lease=settings.job_lease,
        )

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def owner_key(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:jobs"

    def create(
        self,
        job_id: str,
        *,
        qconfig: str,
        has_calibration: bool,
        model_name: str,
        owner: str = "",
        has_validation: bool = False,
    ) -> Job:
        now = time.time()
        fields = {
            "id": job_id,
            "state": "queued",
            "stage": "queued",
            "progress": 0,
            "created_at": now,
            "queued_at": now,
            "attempt": 0,
            "dispatch": 1,
            "qconfig": qconfig,
            "has_calibration": "1" if has_calibration else "0",
            "has_validation": "1" if has_validation else "0",
            "model_name": model_name,
            "owner": owner,
        }
        pipe = self.redis.pipeline()
        pipe.hset(self.key(job_id), mapping=fields)
        pipe.zadd(self.index_key, {job_id: now})
        pipe.zadd(self.owner_key(owner), {job_id: now})
        pipe.zadd(self.active_key, {job_id: now})
        pipe.execute()
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        data = self.redis.hgetall(self.key(job_id))
        return Job.from_hash(data) if data else None

    def start(self, job_id: str, dispatch: int = 1) -> int | None:
        """Claim the job for a new run; the attempt number, or None when it must not run: it is
        finished, cancelled or gone, the message is of an older dispatch, another run of it is
        alive (kombu puts a running job's message back when its connection drops), or the job has
        used up its deliveries (then it is failed here, with E_WORKER_LOST)."""
        message = (
            "the job was started %d times and its worker was lost each time (%s); it may need more "
            "memory than JOB_MEMORY_LIMIT or crash the compiler: check the workers' logs"
        )
        run_by = f"{socket.gethostname()}:{os.getpid()}"
        args = [time.time(), dispatch, self.max_deliveries, WORKER_LOST_CODE, message, job_id]
        args += [self.lease, run_by]
        attempt = int(self._start(keys=[self.key(job_id), self.active_key], args=args))
        return attempt if attempt > 0 else None

    def progress(
        self, job_id: str, attempt: int, stage: str, percent: int, trial: dict[str, Any] | None = None
    ) -> bool:
        """Record a stage (and a search trial); False when this run is no longer the job's current
        one (e.g. cancelled)."""
        fields: dict[str, Any] = {"stage": stage, "progress": percent}
        if trial is not None:
            fields["trial"] = json.dumps(trial)
        return self._update_if_current(job_id, attempt, fields)

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        """This run is alive; False when it is no longer the job's current one."""
        return self._update_if_current(job_id, attempt, {"heartbeat": time.time()})

    def finish(
        self, job_id: str, attempt: int, state: State, *, code: str | None = None, message: str | None = None
    ) -> bool:
        fields: dict[str, Any] = {"state": state, "finished_at": time.time()}
        if state == "succeeded":
            fields.update(stage="done", progress=100)
        else:
            fields.update(error_code=code or "E_INTERNAL", error_message=message or "")
        return self._update_if_current(job_id, attempt, fields, final=True)

    def _update_if_current(
        self, job_id: str, attempt: int, fields: dict[str, Any], final: bool = False
    ) -> bool:
        args: list[Any] = [attempt, "1" if final else "0"]
        for name, value in fields.items():
            args += [name, value]
        return bool(self._update(keys=[self.key(job_id), self.active_key], args=args))

    def fail_dispatch(self, job_id: str, dispatch: int, code: str, message: str) -> bool:
        """Fail an active job from outside its run (the worker saw it hit the hard time limit)."""
        args = [dispatch, time.time(), code, message, job_id]
        return bool(self._fail_dispatch(keys=[self.key(job_id), self.active_key], args=args))

    def note_loss(self, job_id: str, cause: str) -> None:
        """Remember why a run was lost, for the E_WORKER_LOST message if the job keeps being lost,
        and mark it dead so that its re-delivery runs at once."""
        self._note_loss(keys=[self.key(job_id)], args=[cause])

    def cancel(self, job_id: str) -> bool:
        return bool(self._cancel(keys=[self.key(job_id), self.active_key], args=[time.time(), job_id]))

    def delete(self, job_id: str) -> None:
        owner = self.redis.hget(self.key(job_id), "owner") or ""
        pipe = self.redis.pipeline()
        pipe.delete(self.key(job_id))
        pipe.zrem(self.index_key, job_id)
        pipe.zrem(self.owner_key(owner), job_id)
        pipe.zrem(self.active_key, job_id)
        pipe.execute()

    def recent(self, offset: int, limit: int, owner: str | None = None) -> tuple[list[Job], int]:
        """Newest first; only `owner`'s jobs when given."""
        index = self.index_key if owner is None else self.owner_key(owner)
        ids = self.redis.zrevrange(index, offset, offset + limit - 1)
        jobs = [job for job in (self.get(job_id) for job_id in ids) if job is not None]
        return jobs, int(self.redis.zcard(index))

    def lost_jobs(self, queued_in_broker: Iterable[str]) -> list[tuple[str, int]]:
        """Put back in the queue, under a new dispatch, every active job whose run stopped
        heartbeating for a lease, and every queued job whose message is nowhere in the
        queue after as long (lost in a Redis restart, or held by a worker that died before
        starting it); (job id, dispatch) of each, for the caller to send."""
        in_broker = set(queued_in_broker)
        now = time.time()
        requeued = []
        for job_id in self.redis.zrange(self.active_key, 0, -1):
            cause = f"run lost at {time.strftime('%H:%M:%S', time.gmtime(now))} UTC (no heartbeat)"
            args = [now, self.lease, job_id, "1" if job_id in in_broker else "0", cause]
            dispatch = int(self._requeue(keys=[self.key(job_id), self.active_key], args=args))
            if dispatch:
                requeued.append((job_id, dispatch))
        return requeued

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


def queued_task_ids(client: redis.Redis, queue: str, held_for: float) -> set[str]:
    """Ids of the task messages waiting in a Celery queue on Redis (kombu keeps one list per queue
    and priority step), or delivered to a worker less than `held_for` seconds ago (kombu keeps
    those in its `unacked` hash, as [message, exchange, routing key], indexed by delivery time)."""
    messages = []
    for key in [queue, *(f"{queue}\x06\x16{step}" for step in PRIORITY_STEPS[1:])]:
        messages += [_json(raw) for raw in client.lrange(key, 0, -1)]
    tags = client.zrangebyscore("unacked_index", time.time() - held_for, "+inf")
    for raw in client.hmget("unacked", tags) if tags else []:
        entry = _json(raw)
        messages.append(entry[0] if isinstance(entry, list) and entry else None)
    return {m["headers"]["id"] for m in messages if isinstance(m, dict) and "id" in m.get("headers", {})}


def _json(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
