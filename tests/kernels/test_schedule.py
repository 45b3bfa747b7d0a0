"""The generic schedule must actually reach the hot float ops, not silently fall back."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import s_tir, tirx

from tests.kernels import graphs
from worker.kernels import schedule

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})


def _reduction_loop_kinds(func: tirx.PrimFunc) -> list[set[int]]:
    """For each block with a reduction iterator: the kinds of the loops around it."""
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    kinds = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if any(int(iv.iter_type) == schedule.REDUCE for iv in sch.get(block).iter_vars):
            kinds.append({int(sch.get(lp).kind) for lp in sch.get_loops(block)})
    return kinds


@pytest.mark.parametrize(
    "mod",
    [
        graphs.raw_conv("float32", (1, 8, 28, 28), 16, 3, 1, 1, 1, np.random.default_rng(0)),
        graphs.raw_conv("float32", (1, 16, 14, 14), 16, 3, 1, 1, 16, np.random.default_rng(0)),
        graphs.raw_conv("int8", (1, 16, 56, 56), 16, 3, 2, 1, 16, np.random.default_rng(0)),
        graphs.matmul("float32", (16, 64), 32, np.random.default_rng(0)),
    ],
    ids=["conv", "depthwise", "depthwise-int8-s2", "matmul"],
)
def test_reductions_are_parallel_and_vectorized(mod: tvm.IRModule) -> None:
    fused = graphs.fused(mod, TARGET)
    funcs = [f for f in fused.functions.values() if isinstance(f, tirx.PrimFunc)]
    scheduled = [k for f in funcs for k in _reduction_loop_kinds(schedule.schedule_func(f))]
    assert scheduled, "no reduction block found"
    for kinds in scheduled:
        assert int(tirx.ForKind.PARALLEL) in kinds
        assert int(tirx.ForKind.VECTORIZED) in kinds
