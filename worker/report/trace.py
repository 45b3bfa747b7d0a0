"""Runs of the artifact under the Relax VM's instrument: which kernels it calls, how long each
takes, and chosen tensors that kernels write out.

TVM 0.27's VirtualMachine has no `profile=True`; `set_instrument` calls back before and after
every VM call (kernels, VM builtins, VM functions) with the call's arguments, and a kernel's
outputs are its last arguments (destination passing). So one instrumented run of the library
itself gives the report three things without building anything else: the kernel calls to check
the integrality section against, the per-kernel time for the hotspots, and the intermediate
tensors for the per-layer accuracy. Time is taken around the call, before any copy.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import tvm


@dataclass
class KernelTimes:
    """Per kernel call (in call order): its symbol and the least time it took over the runs."""

    symbols: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add_run(self, symbols: list[str], seconds: list[float]) -> None:
        if not self.symbols:
            self.symbols, self.seconds = list(symbols), list(seconds)
            return
        if symbols != self.symbols:
            raise ValueError("two runs of the same artifact called different kernels")
        self.seconds = [min(a, b) for a, b in zip(self.seconds, seconds, strict=True)]

    def by_kernel(self) -> dict[str, tuple[int, float]]:
        """symbol -> (calls per run, seconds per run), slowest first."""
        out: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        for symbol, seconds in zip(self.symbols, self.seconds, strict=True):
            out[symbol][0] += 1
            out[symbol][1] += seconds
        return {k: (int(c), s) for k, (c, s) in sorted(out.items(), key=lambda kv: -kv[1][1])}


class TracedArtifact:
    """A VirtualMachine of the artifact whose `main` records every kernel call.

    `kernels` is the set of kernel symbols (anything else the VM calls is a builtin or a VM
    function); `capture` maps a kernel call's position in the run to the number of outputs it
    writes, for the calls whose outputs the caller wants back.
    """

    def __init__(self, vm: tvm.relax.VirtualMachine, kernels: set[str]) -> None:
        self.vm = vm
        self.kernels = kernels
        self.times = KernelTimes()
        self._capture: Mapping[int, int] = {}
        self._symbols: list[str] = []
        self._seconds: list[float] = []
        self._starts: list[float] = []
        self._captured: dict[int, list[np.ndarray]] = {}
        vm.set_instrument(tvm.runtime.convert(self._instrument))

    def _instrument(self, _func: object, symbol: str, before: bool, _ret: object, *args: object) -> int:
        symbol = str(symbol)
        if symbol not in self.kernels:
            return 0
        if before:
            self._starts.append(time.perf_counter())
            return 0
        self._seconds.append(time.perf_counter() - self._starts.pop())
        position = len(self._symbols)
        self._symbols.append(symbol)
        outputs = self._capture.get(position)
        if outputs:
            self._captured[position] = [a.numpy() for a in args[len(args) - outputs :]]
        return 0

    def run(
        self, inputs: list[np.ndarray], capture: Mapping[int, int] | None = None
    ) -> tuple[list[np.ndarray], dict[int, list[np.ndarray]]]:
        """(main's outputs, {call position: the outputs that call wrote}) of one run."""
        self._capture = capture or {}
        self._symbols, self._seconds, self._starts, self._captured = [], [], [], {}
        out = self.vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
        self.times.add_run(self._symbols, self._seconds)
        outputs = [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]
        return outputs, self._captured
