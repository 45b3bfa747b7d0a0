"""The job runtime's control flow (soft time limit, cancellation) crosses TVM's FFI as itself."""

from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from worker.runtime.tasks import JobCancelled, keep_control_flow_through_tvm


@pytest.mark.parametrize("cls", [SoftTimeLimitExceeded, JobCancelled])
def test_raised_inside_a_tvm_callback_it_comes_out_as_itself(cls: type[Exception]) -> None:
    import tvm

    keep_control_flow_through_tvm()

    def callback() -> None:
        raise cls("stop")

    through_ffi = tvm.runtime.convert(callback)  # called from C++, as a pass or schedule callback is
    with pytest.raises(cls):
        through_ffi()
