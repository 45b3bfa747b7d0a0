"""GOP/s of each int8 conv kernel alone, against the peak of the target's int8 ISA on this machine.

Peak = 2 ops x int8 MACs per cycle per core x clock x threads, with one vector of int8 MACs
(32 on 256-bit, 64 on 512-bit registers) on each of two ports: for AVX2, vpmaddubsw. The AVX2
u8s8 kernel also needs one vpmaddwd per vpmaddubsw on the same ports, so about half of that peak
is the practical ceiling of this instruction pair (the int16 path's is the same); vpdpbusd does
the whole dot product in one instruction. CPUs with one 512-bit port reach half the 512-bit peak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from bench import models
from worker.kernels import intrin, isa, packed

PORTS = 2


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
    entry = isa.select(target)
    if entry is None:
        return []
    intrin.register(entry)
    peak = 2 * PORTS * entry.vector_bits // 8 * clock_ghz() * threads
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
                shape, w, tuple(int(s) for s in a.strides), pad, tuple(int(d) for d in a.dilation), entry
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
                    "isa": entry.name,
                    "mode": kernel.dot.name,
                    "ms": seconds * 1e3,
                    "gops": gops,
                    "fraction_of_peak": gops / peak,
                }
            )
    return rows
