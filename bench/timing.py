"""Latency measured side by side: engines take turns, so a load spike on a shared machine hits
every engine alike; wall and process CPU time per call (at 1 thread the CPU time is the call's own
compute, without the slices the scheduler gives to other processes)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_ms(
    engines: dict[str, Callable[[], object]], rounds: int, runs: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(wall, cpu) ms per engine: engines take turns, each turn `runs` calls after one warm-up."""
    wall: dict[str, list[float]] = {k: [] for k in engines}
    cpu: dict[str, list[float]] = {k: [] for k in engines}
    for fn in engines.values():
        fn()
    for _ in range(rounds):
        for name, fn in engines.items():
            fn()
            turn_wall, turn_cpu = [], []
            for _ in range(runs):
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                turn_wall.append((time.perf_counter() - w0) * 1e3)
                turn_cpu.append((time.process_time() - c0) * 1e3)
            wall[name].append(statistics.median(turn_wall))
            cpu[name].append(statistics.median(turn_cpu))
    return (
        {k: statistics.median(v) for k, v in wall.items()},
        {k: statistics.median(v) for k, v in cpu.items()},
    )
