"""What ends a run (soft time limit, cancellation, a lost job store) is raised in the job's thread
by its watcher and goes through every `except Exception` fallback, TVM callbacks included."""

from __future__ import annotations

import time

import pytest

from worker.runtime.watch import STOPS, JobCancelled, JobStopped, JobTimeLimit, watched_run


def _swallowing_loop() -> None:
    """A pipeline stage with a fallback that catches everything it can."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:  # noqa: SIM105 (the fallback under test)
            time.sleep(0.01)
        except Exception:
            pass


def test_the_soft_limit_goes_through_except_exception() -> None:
    with pytest.raises(JobTimeLimit, match="JOB_SOFT_TIME_LIMIT"), watched_run(lambda: True, 0.2, 5.0):
        _swallowing_loop()


def test_a_cancelled_run_is_stopped_at_its_next_heartbeat() -> None:
    with pytest.raises(JobCancelled), watched_run(lambda: False, 60.0, 0.1):
        _swallowing_loop()


@pytest.mark.parametrize("cls", STOPS)
def test_raised_inside_a_tvm_callback_it_comes_out_as_itself(cls: type[JobStopped]) -> None:
    import tvm

    from worker.runtime.watch import keep_control_flow_through_tvm

    keep_control_flow_through_tvm()

    def callback() -> None:
        raise cls("stop")

    through_ffi = tvm.runtime.convert(callback)  # called from C++, as a pass or schedule callback is
    with pytest.raises(cls):
        try:
            through_ffi()
        except Exception:  # a build fallback around the TVM call
            pytest.fail("caught as an Exception")
