"""Verify: build the report sections by running both artifacts and reading the lowered IR."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tvm

from worker.qconfig import QConfig
from worker.quantize.calibrate import Runner
from worker.quantize.calibration import Choice
from worker.quantize.classify import OpInfo, classify, lowered_ops
from worker.quantize.graph import Graph, labels
from worker.quantize.realize import Realizer, probe_module
from worker.report.metrics import ErrorAccumulator
from worker.report.schema import (
    Accuracy,
    Calibration,
    Integrality,
    LayerAccuracy,
    OpRecord,
    TableOp,
    TensorCalibration,
)

#: per-layer comparison cost grows with layers x batches; these bound it for big models
MAX_LAYER_BATCHES = 8


def _as_list(out: object) -> list[np.ndarray]:
    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [o.numpy() for o in out]


def _run(vm: tvm.relax.VirtualMachine, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return _as_list(vm["main"](*[tvm.runtime.tensor(x) for x in inputs]))


def _reason(op: OpInfo, reasons: dict[str, str]) -> str | None:
    """The partition's own reason, as it gave it ("unsupported: layout NHWC/OIHW ...", not "no rule")."""
    return None if op.integral else reasons.get(op.var)


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
            )
        )
    return out


def integrality(
    qmod: tvm.IRModule, reasons: dict[str, str], tables: list[TableOp] | None = None
) -> Integrality:
    """The integrality section. Outside the core, the model's own float ops (those with a reason)
    are `float_fallback`; `prefix`/`suffix` then hold only the conversions the quantizer added.
    With do_simulation the fake-quantized ops are the core, in float: the verdict is false."""
    records = []
    for op in classify(lowered_ops(qmod)):
        group = op.group
        if reasons.get(op.var) == "simulation":
            group = "core"  # the would-be integer core, simulated in float: never integral
        elif group != "core" and op.var in reasons:
            group = "float_fallback"
        records.append(
            OpRecord(
                name=op.name,
                relax_op=op.relax_op or op.name.rstrip("0123456789"),
                group=group,
                inputs=op.inputs,
                outputs=op.outputs,
                integral=op.integral,
                macs=op.macs,
                reason=_reason(op, reasons),
            )
        )
    return Integrality.from_ops(records, tables)


def accuracy(
    float_vm: tvm.relax.VirtualMachine,
    quant_vm: tvm.relax.VirtualMachine,
    eval_batches: list[list[np.ndarray]],
    samples_per_feed: int,
    output_names: list[str],
    held_out: bool,
    graph: Graph,
    realizer: Realizer,
    qconfig: QConfig,
    run: Runner,
) -> Accuracy:
    outputs = [ErrorAccumulator() for _ in output_names]
    for inputs in eval_batches:
        for acc, ref, q in zip(outputs, _run(float_vm, inputs), _run(quant_vm, inputs), strict=True):
            acc.update(ref, q)
    layers = _layer_accuracy(eval_batches[:MAX_LAYER_BATCHES], graph, realizer, qconfig, run)
    return Accuracy(
        samples=len(eval_batches) * samples_per_feed,
        held_out=held_out,
        outputs=[acc.output_accuracy(name) for acc, name in zip(outputs, output_names, strict=True)],
        layers=layers,
    )


def _layer_accuracy(
    batches: list[list[np.ndarray]],
    graph: Graph,
    realizer: Realizer,
    qconfig: QConfig,
    run: Runner,
) -> list[LayerAccuracy]:
    """Each quantized layer's dequantized output against the float model's tensor there."""
    nodes = [n for n in graph.nodes if n in realizer.layers]
    if not nodes or qconfig.do_simulation:
        return []
    points = [n.var for n in nodes]
    float_vm = run(probe_module(graph, qconfig, points))
    quant_vm = run(realizer.layer_module(points))
    accs = [ErrorAccumulator() for _ in nodes]
    for inputs in batches:
        for acc, ref, q in zip(accs, _run(float_vm, inputs), _run(quant_vm, inputs), strict=True):
            acc.update(ref, q)
    names = labels(graph)
    return [a.layer_accuracy(names[n.var], n.op) for n, a in zip(nodes, accs, strict=True)]


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
