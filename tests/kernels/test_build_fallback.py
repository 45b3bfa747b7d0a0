"""build.compile_module falls back to TVM's pipeline when ours fails, but only on build failures:
a failure without a message still falls back, a soft time limit or a cancellation goes through."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

import worker.kernels
from tests.kernels import graphs
from worker import build
from worker.runtime.watch import STOPS

TARGET = tvm.target.Target({"kind": "llvm"})


def _matmul() -> tuple[tvm.IRModule, np.ndarray]:
    rng = np.random.default_rng(0)
    return graphs.matmul("float32", (2, 8), 4, rng), rng.standard_normal((2, 8)).astype(np.float32)


def _failing_pipeline(exc: BaseException):
    def compile_module(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.relax.VMExecutable:
        raise exc

    return compile_module


def test_a_failure_without_a_message_falls_back_to_tvm(monkeypatch: pytest.MonkeyPatch) -> None:
    mod, x = _matmul()
    monkeypatch.setattr(worker.kernels, "compile_module", _failing_pipeline(AssertionError()))
    with pytest.warns(UserWarning, match=r"CPU pipeline failed \(AssertionError\)"):
        executable = build.compile_module(mod, TARGET)
    np.testing.assert_allclose(graphs.run(executable, x), graphs.run(tvm.compile(mod, TARGET), x))


@pytest.mark.parametrize("control", [cls("job") for cls in STOPS])
def test_time_limits_and_cancellations_are_not_build_failures(
    monkeypatch: pytest.MonkeyPatch, control: BaseException
) -> None:
    mod, _ = _matmul()
    monkeypatch.setattr(worker.kernels, "compile_module", _failing_pipeline(control))
    monkeypatch.setattr(tvm, "compile", _failing_pipeline(AssertionError("the fallback ran")))
    with pytest.raises(type(control)):
        build.compile_module(mod, TARGET)
