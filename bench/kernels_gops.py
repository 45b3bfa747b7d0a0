"""GOP/s of each int8 conv kernel alone, against the AVX2 peak of this machine.

Peak = 2 ops x 64 int8 MACs per cycle per core (vpmaddubsw, 32 MACs, on two ports) x clock x
threads. The u8s8 kernel also needs one vpmaddwd per vpmaddubsw on the same ports, so about half
the peak is the practical ceiling of this instruction pair; the int16 path ceiling is the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from bench import models
from worker.kernels import intrin, packed

MACS_PER_CYCLE = 64


def clock_ghz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":", 1)[1]) / 1e3
    raise RuntimeError("no 'cpu MHz' in /proc/cpuinfo")


def _convs(mod: tvm.IRModule) -> list[relax.Call]:
    """The int8 conv2d calls (groups=1) of a model's main function, in order."""
    conv = tvm.ir.Op.get("relax.nn.conv2d")
    found = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op.same_as(conv) and int(value.attrs.groups) == 1:
                found.append(value)
    return found


def measure(
    model: models.Model, weight_bits: list[int], target: tvm.target.Target, threads: int
) -> list[dict]:
    intrin.register()
    peak = 2 * MACS_PER_CYCLE * clock_ghz() * threads
    rows, seen = [], set()
    for bits in weight_bits:
        for call in _convs(models.to_int8_relax(model, weight_bits=bits)):
            data, weight = call.args
            shape = tuple(int(d) for d in data.ty.shape)
            w = weight.value.numpy()
            a = call.attrs
            key = (bits, shape, w.shape, tuple(int(s) for s in a.strides))
            if key in seen:
                continue
            seen.add(key)
            pad = tuple(int(p) for p in a.padding)
            kernel = packed.conv2d_nchw(
                shape, w, tuple(int(s) for s in a.strides), pad, tuple(int(d) for d in a.dilation)
            )
            lib = tvm.tirx.build(tvm.IRModule({"main": kernel.func}), target=target)
            out_shape = tuple(int(d) for d in call.ty.shape)
            args = [
                tvm.runtime.tensor(np.zeros(shape, np.int8)),
                *(tvm.runtime.tensor(c) for c in kernel.constants),
                tvm.runtime.tensor(np.zeros(out_shape, np.int32)),
            ]
            seconds = min(lib.time_evaluator("main", tvm.cpu(), number=5, repeat=3)(*args).results)
            macs = int(np.prod(out_shape)) * int(np.prod(w.shape[1:]))
            gops = 2 * macs / seconds / 1e9
            rows.append(
                {
                    "layer": f"{shape[1]}->{w.shape[0]} k{w.shape[2]} s{key[3][0]} {shape[2]}x{shape[3]}",
                    "weight_bits": bits,
                    "mode": kernel.mode.name,
                    "ms": seconds * 1e3,
                    "gops": gops,
                    "fraction_of_peak": gops / peak,
                }
            )
    return rows
