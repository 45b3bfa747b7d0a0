"""Verify: build the report sections by running the artifacts and reading the built module.

Integrality comes from the kernels of the built module (quantize/classify.py). Accuracy and the
per-layer figures come from the artifact itself, run under the VM's instrument (report/trace.py):
its outputs against the float build's, and the int8 tensors its kernels write out against the
float model's tensors there, which the calibration probe computes (no other module is built).
The instrumented runs also check that the library calls exactly the kernels the integrality
section lists, and time each kernel for the hotspots.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from worker.errors import InternalError
from worker.quantize.calibration import Choice
from worker.quantize.classify import OpInfo, float_reason
from worker.quantize.graph import Graph, labels
from worker.quantize.realize import Realizer
from worker.report.metrics import ErrorAccumulator
from worker.report.schema import (
    Accuracy,
    Calibration,
    Integrality,
    KernelTime,
    OpRecord,
    TableOp,
    TensorCalibration,
)
from worker.report.trace import TracedArtifact

#: per-layer figures are taken on the first batches only, and on at most this many elements of
#: each tensor (every k-th): SQNR and cosine are sums over elements, and a uniform sample of a
#: quarter million estimates them to well under 0.1 dB, at a fraction of the cost on big maps
LAYER_BATCHES = 2
LAYER_ELEMENTS = 1 << 18
HOTSPOTS = 5

#: the reason of a float kernel the partition said nothing about: the quantizer's own conversions
_CONVERSION = {
    "prefix": "conversion: quantizes the model's float input",
    "suffix": "conversion: dequantizes the integer result",
    "core": "float arithmetic between integer kernels",
    "float_fallback": "float op outside the quantized region",
}


def _as_list(out: object) -> list[np.ndarray]:
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def _run(vm: relax.VirtualMachine, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return _as_list(vm["main"](*[tvm.runtime.tensor(x) for x in inputs]))


def table_ops(graph: Graph, realizer: Realizer) -> list[TableOp]:
    """Every non-linear op the realize pass computed in integers, in graph order."""
    names = labels(graph)
    out = []
    for node in graph.nodes:
        info = realizer.tables.get(node)
        if info is None:
            continue
        error = info.max_abs_error
        out.append(
            TableOp(
                name=names[node.var],
                function=info.function,
                form=info.form,
                input_scale=info.input_scale,
                output_scale=info.output_scale,
                max_abs_error=error,
                max_error_steps=None if error is None else error / info.output_scale,
                clipped_levels=info.clipped_levels,
            )
        )
    return out


def integrality(
    ops: list[OpInfo], reasons: dict[str, str], tables: list[TableOp] | None = None
) -> Integrality:
    """The integrality section from the classified kernels of the artifact. Outside the core, the
    model's own float ops (kernels with a partition reason) are `float_fallback`; `prefix`/`suffix`
    then hold only the conversions the quantizer added. With do_simulation the fake-quantized
    kernels are the core, in float: the verdict is false."""
    records = []
    for op in ops:
        group = op.group
        reason = float_reason(op, reasons)
        if any(reasons.get(name) == "simulation" for name in op.origins):
            group = "core"  # the would-be integer core, simulated in float: never integral
        elif group != "core" and reason is not None:
            group = "float_fallback"
        records.append(
            OpRecord(
                name=op.name,
                function=op.function,
                relax_op=op.relax_op,
                relax_ops=op.relax_ops,
                group=group,
                inputs=op.inputs,
                outputs=op.outputs,
                computes=op.computes,
                integral=op.integral,
                exact_float=op.exact_float,
                macs=op.macs,
                reason=None if op.integral else reason or _CONVERSION[group],
            )
        )
    return Integrality.from_ops(records, tables)


@dataclass
class LayerPoint:
    """A float tensor of the model and the int8 tensor the artifact writes for it."""

    expr: relax.Expr  # the float tensor (a calibration point)
    label: str
    op: str
    call: int  # position of the kernel call that writes the int8 tensor
    output: int  # which of its outputs
    scale: float


@dataclass
class LayerPlan:
    """Per-layer accuracy: the points, and the float probes (calibration's) that compute them."""

    points: list[LayerPoint]
    probes: list[tuple[relax.VirtualMachine, list[relax.Expr]]]
    graph: Graph
    #: points whose captured tensor turned out not to be theirs (another shape: a kernel output of
    #: the same binding name, e.g. in an unrolled recurrence); they get no row rather than a wrong one
    mismatched: set[int] = field(default_factory=set)

    def capture(self, ops: list[OpInfo]) -> dict[int, int]:
        return {p.call: len(ops[p.call].outputs) for p in self.points}


def layer_plan(
    graph: Graph,
    points: list[relax.Expr],
    realizer: Realizer,
    ops: list[OpInfo],
    probes: list[tuple[relax.VirtualMachine, list[relax.Expr]]],
) -> LayerPlan:
    """The calibration points whose int8 tensor some kernel of the artifact writes out (one fused
    into its consumer is not in memory, so it has no row)."""
    written: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    for call, op in enumerate(ops):
        for output, name in enumerate(op.produces):
            if name in seen:
                written.pop(name, None)  # ambiguous: two kernels write a tensor of that name
            else:
                written[name] = (call, output)
            seen.add(name)
    names = labels(graph)
    plan = []
    for expr in points:
        q = realizer.integer_tensor(expr)
        if q is None or q.per_channel or not isinstance(q.expr, relax.Var) or q.expr.name not in written:
            continue
        call, output = written[q.expr.name]
        node = graph.producer(expr)
        op = "input" if node is None else node.op or node.name
        plan.append(LayerPoint(expr, names[expr], op, call, output, float(q.scale)))
    return LayerPlan(plan, probes, graph)


def _sample(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1)
    return flat[:: -(-flat.size // LAYER_ELEMENTS)]


def accuracy(
    float_vm: relax.VirtualMachine,
    traced: TracedArtifact,
    ops: list[OpInfo],
    eval_batches: list[list[np.ndarray]],
    samples_per_feed: int,
    output_names: list[str],
    held_out: bool,
    plan: LayerPlan | None,
) -> Accuracy:
    """Outputs of the artifact against the float build on every evaluation batch; on the first
    LAYER_BATCHES, the int8 tensors it writes against the float model's (when `plan` is given)."""
    outputs = [ErrorAccumulator() for _ in output_names]
    layers = [ErrorAccumulator() for _ in plan.points] if plan else []
    capture = plan.capture(ops) if plan else {}
    layer_batches = 0
    for i, inputs in enumerate(eval_batches):
        with_layers = plan is not None and i < LAYER_BATCHES
        got, written = traced.run(inputs, capture if with_layers else None)
        if i == 0:
            _check_calls(traced, ops)
        for acc, ref, q in zip(outputs, _run(float_vm, inputs), got, strict=True):
            acc.update(ref, q)
        if with_layers:
            _update_layers(plan, layers, inputs, written)
            layer_batches += 1
    return Accuracy(
        samples=len(eval_batches) * samples_per_feed,
        held_out=held_out,
        outputs=[acc.output_accuracy(name) for acc, name in zip(outputs, output_names, strict=True)],
        layers=[
            a.layer_accuracy(p.label, p.op)
            for i, (p, a) in enumerate(zip(plan.points, layers, strict=True))
            if i not in plan.mismatched
        ]
        if plan
        else [],
        layer_samples=layer_batches * samples_per_feed,
    )


def _check_calls(traced: TracedArtifact, ops: list[OpInfo]) -> None:
    """The report proves what ships: the library must call exactly the kernels it lists."""
    called, listed = traced.times.symbols, [op.name for op in ops]
    if called != listed:
        extra = sorted(set(called) - set(listed))
        missing = sorted(set(listed) - set(called))
        raise InternalError(
            f"the artifact called {len(called)} kernels, the integrality section lists {len(listed)} "
            f"(not listed: {extra[:5]}, not called: {missing[:5]}); please report it"
        )


def _update_layers(
    plan: LayerPlan,
    accs: list[ErrorAccumulator],
    inputs: list[np.ndarray],
    written: dict[int, list[np.ndarray]],
) -> None:
    params = dict(zip(plan.graph.params, inputs, strict=True))
    index = {p.expr: i for i, p in enumerate(plan.points)}

    def update(expr: relax.Expr, value: np.ndarray) -> None:
        i = index.get(expr)
        if i is not None:
            p = plan.points[i]
            captured = written[p.call][p.output]
            if captured.shape != np.shape(value):
                plan.mismatched.add(i)
            if i in plan.mismatched:
                return
            accs[i].update(_sample(value), _sample(captured.astype(np.float64) * p.scale))

    for expr, value in params.items():
        update(expr, value)
    for vm, chunk in plan.probes:
        if any(e in index for e in chunk):
            for expr, value in zip(chunk, _run(vm, inputs), strict=True):
                update(expr, value)


def hotspots(traced: TracedArtifact, ops: list[OpInfo]) -> list[KernelTime]:
    """The kernels that took the most time in the instrumented runs (least time per call)."""
    kinds = {op.name: op.relax_op for op in ops}
    by_kernel = traced.times.by_kernel()
    total = sum(seconds for _, seconds in by_kernel.values()) or 1.0
    return [
        KernelTime(
            name=name, relax_op=kinds.get(name, ""), calls=calls, ms=seconds * 1e3, share=seconds / total
        )
        for name, (calls, seconds) in list(by_kernel.items())[:HOTSPOTS]
    ]


def calibration_section(
    method: str,
    samples: int,
    batches: int,
    table: list[tuple[str, str, int, Choice]],
    nbits: dict[str, int],
    weights: Iterator[tuple[str, np.ndarray, str]],
) -> Calibration:
    """Activations as the collectors chose them (with their error figures), then the weights."""
    tensors = [
        TensorCalibration(
            name=name,
            threshold=c.threshold,
            scale=c.threshold / 2 ** (nbit - 1),
            method=c.method,
            kind=kind,
            nbit=nbit,
            clipped=c.clipped,
            mse_vs_max=c.mse_vs_max,
            sqnr_db=c.sqnr_db,
        )
        for name, kind, nbit, c in table
    ]
    top = 2 ** (nbits["weight"] - 1)
    for name, scale, wmethod in weights:
        values = scale.ravel().tolist()
        tensors.append(
            TensorCalibration(
                name=name,
                threshold=[v * top for v in values] if len(values) > 1 else values[0] * top,
                scale=values if len(values) > 1 else values[0],
                method=wmethod,
                kind="weight",
                nbit=nbits["weight"],
            )
        )
    return Calibration(method=method, samples_seen=samples, batches=batches, tensors=tensors)
