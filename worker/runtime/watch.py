"""What ends a running job from outside its code: the soft time limit, a cancellation, a lost job store.

Each is a `JobStopped`, a BaseException: the pipeline and the libraries under it have `except
Exception` fallbacks (a failed simplification retried another way, a failed build retried with
TVM's pipeline) and a time limit or a cancellation must go through every one of them. A watcher
thread beside the job writes its heartbeat, notices the soft limit or that the run is no longer
the job's current one (cancelled, or superseded by a re-delivery), and then signals the job's
thread, whose handler raises the matching JobStopped wherever that thread is, TVM callbacks
included (the classes are registered with TVM's FFI, so they cross C++ as themselves).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: The signal the watcher (or `DELETE /jobs/{id}` through Celery's revoke) sends to a job's thread.
STOP_SIGNAL = signal.SIGUSR2
RESIGNAL_EVERY = 1.0  # seconds; in case a C extension swallowed the first one


class JobStopped(BaseException):
    """The run must end now; never caught by a fallback (not an Exception)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class JobTimeLimit(JobStopped):
    """The job ran past JOB_SOFT_TIME_LIMIT."""


class JobCancelled(JobStopped):
    """The job was cancelled, or this run was superseded by a re-delivery of the job."""


class StoreUnreachable(JobStopped):
    """The job store stayed unreachable past the retries: the run is abandoned and recovery sends
    the job again once Redis is back."""


STOPS: tuple[type[JobStopped], ...] = (JobTimeLimit, JobCancelled, StoreUnreachable)


def keep_control_flow_through_tvm() -> None:
    """Raised while TVM is calling back into Python, an exception leaves TVM's FFI as RuntimeError
    unless its class is registered there; registered, it comes out as itself."""
    import tvm_ffi

    for cls in STOPS:
        tvm_ffi.register_error(cls.__name__, cls)


class RunWatch(threading.Thread):
    """Heartbeats for one run, and the stop signal when the run must end."""

    def __init__(
        self,
        beat: Callable[[], bool],
        soft_limit: float,
        heartbeat: float,
        target_thread: int | None,
    ) -> None:
        super().__init__(name="tvmq-run-watch", daemon=True)
        self._beat = beat
        self._deadline = time.monotonic() + soft_limit
        self._soft_limit = soft_limit
        self._heartbeat = heartbeat
        self._target = target_thread
        self._done = threading.Event()
        self.reason: JobStopped | None = None

    def run(self) -> None:
        next_beat = time.monotonic() + self._heartbeat
        while True:
            now = time.monotonic()
            wake = RESIGNAL_EVERY if self.reason else min(self._deadline - now, next_beat - now)
            if self._done.wait(max(0.0, wake)):
                return
            now = time.monotonic()
            if self.reason is None and now >= self._deadline:
                self.reason = JobTimeLimit(
                    f"the job ran past its time limit (JOB_SOFT_TIME_LIMIT={self._soft_limit:g} s); try a "
                    "smaller model or less calibration data"
                )
            elif self.reason is None and now >= next_beat:
                next_beat = now + self._heartbeat
                try:
                    current = self._beat()
                except RedisError as exc:  # a Redis restart: keep running, beat again later
                    log.warning("heartbeat failed (%s); retrying in %.0f s", exc, self._heartbeat)
                    continue
                if not current:
                    self.reason = JobCancelled("the job was cancelled or handed to another run")
            if self.reason is not None and self._target is not None:
                signal.pthread_kill(self._target, STOP_SIGNAL)

    def check(self) -> None:
        """Raise the stop reason, if any (at a progress report: the way out without signals)."""
        if self.reason is not None:
            raise self.reason

    def finish(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join()


@contextlib.contextmanager
def watched_run(beat: Callable[[], bool], soft_limit: float, heartbeat: float) -> Iterator[RunWatch]:
    """Run the block under a RunWatch; it raises a JobStopped in this thread when the run must end.

    Only the main thread can take signals; elsewhere (a threads pool) the run is heartbeated but
    cannot be interrupted, and ends at its next progress report instead.
    """
    main = threading.current_thread() is threading.main_thread()
    watch = RunWatch(beat, soft_limit, heartbeat, threading.get_ident() if main else None)

    def on_stop(_: int, __: FrameType | None) -> None:
        raise watch.reason or JobCancelled("the job was cancelled")

    previous = signal.signal(STOP_SIGNAL, on_stop) if main else None
    watch.start()
    try:
        yield watch
    finally:
        watch.finish()
        if main:
            signal.signal(STOP_SIGNAL, signal.SIG_DFL if previous is None else previous)
