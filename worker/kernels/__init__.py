"""Fast CPU builds: `compile_module` is a drop-in for `tvm.compile(mod, target)`.

The Relax pipeline is TVM's cpu_generic one with two additions: before legalization, int8 and
float32 conv2d/matmul with constant weights become calls to packed kernels (int8 on the fastest
int8 instruction set the target has, worker/kernels/isa.py: AVX-512 VNNI, AVX-VNNI, AVX-512BW,
AVX2; float32 on FMA at that entry's vector width); after FuseTIR, a fused function holding a
packed kernel is scheduled with its epilogue inside the register tile (packed.schedule_fused) and
every other PrimFunc gets our generic CPU schedule (tiling, vectorization, parallel loops). Float
exp, erf, tanh, sigmoid and softmax run on vectorizable approximations, int32 floor division
exactly in float64 (worker/kernels/legalize.py).
Everything else is TVM's default lowering.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from worker.kernels import isa, legalize
from worker.kernels.rewrite import rewrite_packed
from worker.kernels.schedule import schedule_cpu

__all__ = ["compile_module", "relax_pipeline"]


def relax_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """cpu_generic's passes with our packed-kernel rewrite and CPU schedules inserted."""
    chosen = isa.select(target)
    front = [rewrite_packed(chosen, chosen.float_available(target))] if chosen is not None else []

    @tvm.transform.module_pass(opt_level=0, name="tvmq.CPUPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                [
                    relax.transform.FoldConstant(),  # weights transposed or cast by the importer
                    *front,
                    relax.transform.FoldConstant(),
                    *cpu_generic.library_dispatch_passes(target),
                    *legalize.legalize_passes(),
                    schedule_cpu,
                    *cpu_generic.dataflow_lower_passes(target),
                    *cpu_generic.finalize_passes(target),
                ]
            )
            return seq(mod)

    return _pipeline


def compile_module(mod: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    """Same contract as tvm.compile(mod, target), with our pipeline."""
    return tvm.compile(mod, target, relax_pipeline=relax_pipeline(target))
