"""The passes one by one on small graphs: partition decisions, calibration thresholds against
hand-computed values, power-of-two requantization, simulation."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import tvm
from tvm import relax

import tests.models as models
from worker import frontend
from worker.build import compile_and_load
from worker.qconfig import QConfig
from worker.quantize.annotate import annotate
from worker.quantize.calibrate import calibrate
from worker.quantize.graph import build_graph, labels
from worker.quantize.partition import partition
from worker.quantize.prerequisite import prerequisite_optimize
from worker.quantize.realize import realize

TARGET = tvm.target.Target({"kind": "llvm"})
RUN = partial(compile_and_load, target=TARGET)


def _graph(model):
    shapes = frontend.fixed_input_shapes(model, None)  # these test graphs have static shapes
    return build_graph(prerequisite_optimize(frontend.import_relax(frontend.simplify(model, shapes), shapes)))


def _by_label(graph, parts):
    names = labels(graph)
    return {names[n.var]: r for n, r in parts.reasons.items()}


def test_partition_follows_relay_defaults():
    graph = _graph(models.small_cnn())
    reasons = _by_label(graph, partition(graph, QConfig(preset="relay")))
    assert reasons["nn.conv2d#0"] == "skipped layer"  # skip_conv_layers=[0]
    assert reasons["matmul#0"] == "skipped layer"  # skip_dense_layer=True
    assert "nn.conv2d#1" not in reasons
    everything = _by_label(graph, partition(graph, QConfig(skip_conv_layers=[], skip_dense_layer=False)))
    assert not [k for k in everything if k.startswith(("nn.conv2d", "matmul"))]
    excluded = _by_label(graph, partition(graph, QConfig(skip_conv_layers=[], exclude_ops=["concat"])))
    assert excluded["concat#0"] == "excluded by qconfig"


def _calibrated(mode: str, data: np.ndarray, **extra):
    model = models.small_mlp()
    graph = _graph(model)
    qconfig = QConfig(calibrate_mode=mode, skip_dense_layer=False, **extra)
    annotation = annotate(graph, partition(graph, qconfig), qconfig)
    data = frontend.CalibrationSet.from_arrays({"x": data}, frontend.model_inputs(model))
    result = calibrate(graph, annotation, data, qconfig, RUN)
    return graph, result


def test_calibrate_max_and_percentile_against_hand_computed():
    rng = np.random.default_rng(0)
    data = rng.uniform(-3.0, 3.0, size=(64, 64)).astype(np.float32)
    data[17, 5] = 9.5  # one outlier: max sees it, the 99th percentile does not
    graph, result = _calibrated("max", data)
    x = graph.params[0]
    assert result.thresholds[x] == pytest.approx(9.5)
    assert result.samples == 64 and result.batches == 64
    # clipping the outlier costs more (expected MSE) than max's coarser steps: the safety check
    # keeps max and the table says so
    graph, result = _calibrated("percentile", data, percentile=99.0)
    assert result.thresholds[graph.params[0]] == pytest.approx(9.5)
    assert result.table[0][0] == "x" and result.table[0][3].method == "max (fallback from percentile)"
    gaussian = rng.standard_normal((64, 64)).astype(np.float32)  # p99.99 clips about one value a little
    graph, result = _calibrated("percentile", gaussian, percentile=99.99)
    expected = np.percentile(np.abs(gaussian), 99.99)
    assert result.thresholds[graph.params[0]] == pytest.approx(expected, rel=0.01)
    assert result.table[0][3].method == "percentile"


def test_calibrate_chunks_give_the_same_thresholds():
    data = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    _, whole = _calibrated("max", data)
    _, chunked = _calibrated("max", data, calibrate_chunk_by=1)
    assert [c.threshold for *_, c in whole.table] == [c.threshold for *_, c in chunked.table]
    assert len(whole.table) >= 3


def test_power_of_two_config_requantizes_with_shifts_only():
    """Relay's defaults (global_scale 8, power2 weights): every scale is a power of two, so
    requantization is add + right_shift: no integer multiply anywhere in the realized module."""
    graph = _graph(models.small_cnn())
    qconfig = QConfig(preset="relay", skip_conv_layers=[], skip_dense_layer=False)
    annotation = annotate(graph, partition(graph, qconfig), qconfig)
    result = calibrate(graph, annotation, None, qconfig, RUN)
    qmod, _ = realize(graph, annotation, result.thresholds, qconfig)
    calls = [
        b.value
        for block in qmod["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call)
    ]
    int_multiplies = [c for c in calls if c.op.name == "relax.multiply" and str(c.ty.dtype).startswith("int")]
    assert not int_multiplies, "integer multiply (fixed-point requantize) in power-of-two mode"
    assert any(c.op.name == "relax.right_shift" for c in calls)


def test_simulation_is_float_and_close_to_realized():
    model = models.small_cnn()
    graph = _graph(model)
    arrays = models.random_calibration(model, 8, 0)
    data = frontend.CalibrationSet.from_arrays(arrays, frontend.model_inputs(model))
    outs = {}
    for simulate in (False, True):
        qconfig = QConfig(calibrate_mode="max", skip_conv_layers=[], do_simulation=simulate)
        annotation = annotate(graph, partition(graph, qconfig), qconfig)
        result = calibrate(graph, annotation, data, qconfig, RUN)
        qmod, realizer = realize(graph, annotation, result.thresholds, qconfig)
        if simulate:
            assert set(realizer.float_reasons.values()) >= {"simulation"}
            ops = [
                b.value.op.name
                for block in qmod["main"].body.blocks
                for b in block.bindings
                if isinstance(b.value, relax.Call)
            ]
            assert "relax.nn.conv2d" in ops
        vm = relax.VirtualMachine(tvm.compile(qmod, TARGET), tvm.cpu())
        outs[simulate] = vm["main"](tvm.runtime.tensor(arrays["x"][:1])).numpy()
    a, b = outs[False].ravel(), outs[True].ravel()
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.995


def test_prerequisite_folds_standalone_batch_norm_exactly():
    """resnet_small has batch-norms after adds: they become one multiply + add, numerically the same."""
    from tests.quantize.conftest import run_onnx

    path = models.exported_model("resnet_small")
    model = frontend.load_onnx(path)
    shapes = {"input": (1, 3, 32, 32)}
    mod = prerequisite_optimize(frontend.import_relax(frontend.simplify(model, shapes), shapes))
    ops = {
        b.value.op.name
        for block in mod["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call)
    }
    assert "relax.divide" not in ops and "relax.subtract" not in ops
    x = np.random.default_rng(0).standard_normal(shapes["input"]).astype(np.float32)
    got = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, run_onnx(path, {"input": x})[0], rtol=1e-4, atol=1e-4)
