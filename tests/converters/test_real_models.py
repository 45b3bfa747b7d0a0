"""The recurrent real models of the corpus: ddddocr's text recognizer (CNN + bidirectional LSTM)
and silero-vad (conv + LSTM cells inside If branches, a state input and a scalar sample rate)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.converters.wheels import wheel_model
from worker.converters import CONVERTED_OPS, rewrite
from worker.converters.scope import all_graphs
from worker.frontend import CalibrationSet, import_relax, model_inputs, simplify, specialize
from worker.frontend.guard import guard_pins

SILERO = ("silero-vad", "6.2.3")
STATE = (2, 1, 128)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _vm(mod) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    import tvm

    vm = tvm.relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())

    def run(feeds: list[np.ndarray]) -> list[np.ndarray]:
        out = vm["main"](*(tvm.runtime.tensor(x) for x in feeds))
        return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]

    return run


def _max_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    assert [g.shape for g in got] == [w.shape for w in want]
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))


def _recurrent_nodes(model: onnx.ModelProto) -> int:
    return sum(n.op_type in CONVERTED_OPS for g in all_graphs(model.graph) for n in g.node)


@pytest.fixture(scope="module")
def ddddocr() -> onnx.ModelProto:
    return wheel_model("ddddocr", "1.6.1", "ddddocr/common.onnx")


def test_ddddocr_recognizer_rewritten_imports_and_builds(ddddocr):
    shapes = {"input1": (1, 1, 64, 160)}  # ddddocr's own resize: height 64, width kept
    simple = simplify(ddddocr, shapes)
    assert _recurrent_nodes(simple) == 1
    rewritten = rewrite(simple)
    assert _recurrent_nodes(rewritten) == 0
    image = np.random.default_rng(0).uniform(-1, 1, shapes["input1"]).astype(np.float32)
    want = _run(ddddocr, {"input1": image})
    assert _max_error(_run(rewritten, {"input1": image}), want) < 1e-4
    assert _max_error(_vm(import_relax(simple, shapes))([image]), want) < 1e-4


def _silero_feeds(rate: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input": rng.uniform(-0.5, 0.5, (1, 512 if rate == 16000 else 256)).astype(np.float32),
        "state": rng.uniform(-0.5, 0.5, STATE).astype(np.float32),
        "sr": np.array(rate, np.int64),
    }


def test_silero_cells_rewritten_inside_their_if_branches():
    model = wheel_model(*SILERO, "silero_vad/data/silero_vad.onnx")
    assert _recurrent_nodes(model) == 4  # two sample rates × (with state, without state)
    rewritten = rewrite(model)
    assert _recurrent_nodes(rewritten) == 0
    onnx.checker.check_model(rewritten, full_check=True)
    for rate in (16000, 8000):
        feeds = _silero_feeds(rate)
        assert _max_error(_run(rewritten, feeds), _run(model, feeds)) < 1e-4


def test_silero_16k_rewritten_imports_and_builds():
    """The 16 kHz export (no If on the sample rate) through import_relax to a float build, its
    shapes pinned with onnxslim directly (the scalar `sr` left out, as frontend.simplify does)."""
    import onnxslim

    model = wheel_model(*SILERO, "silero_vad/data/silero_vad_16k_op15.onnx")
    simple = onnxslim.slim(copy.deepcopy(model), input_shapes=["input:1,512", "state:2,1,128"])
    assert [vi.name for vi in simple.graph.input] == ["input", "state", "sr"]
    feeds = _silero_feeds(16000)
    mod = import_relax(simple, {"input": (1, 512), "state": STATE, "sr": ()})
    assert _max_error(_vm(mod)(list(feeds.values())), _run(model, feeds)) < 1e-4


def test_silero_imports_through_the_frontend():
    """The whole front door on the If model, as the pipeline runs it: calibration at 16 kHz
    specialises the If on sr (its 8 kHz branch does not type-check for 16 kHz chunks), the build
    matches ONNX Runtime and refuses another sample rate."""
    model = wheel_model(*SILERO, "silero_vad/data/silero_vad.onnx")
    feeds = _silero_feeds(16000)
    calibration = CalibrationSet.from_arrays({f"0/{k}": v for k, v in feeds.items()}, model_inputs(model))
    special, pins = specialize(model, calibration)
    assert [(p.input, p.value) for p in pins] == [("sr", 16000)]
    shapes = calibration.shapes
    mod = guard_pins(import_relax(simplify(special, shapes), shapes), pins)
    run = _vm(mod)
    assert _max_error(run(list(feeds.values())), _run(model, feeds)) < 1e-4
    with pytest.raises(AssertionError, match="input 'sr' must be 16000"):
        run([feeds["input"], feeds["state"], np.array(8000, np.int64)])
