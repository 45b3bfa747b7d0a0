"""load_onnx: parse, check, and refuse external data without ever opening the path it names."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tests.models as models
from worker.errors import ExternalDataError, ModelError
from worker.frontend import input_names, load_onnx, output_names

EXPECTED_IO = {
    "resnet_small": (["input"], ["logits"]),
    "mobilenet_small": (["input"], ["logits"]),
    "unet_small": (["images"], ["mask"]),
    "mlp_small": (["features"], ["logits"]),
    "digits_cnn": (["image"], ["logits"]),
}

#: Paths opened by Python code while the audit hook below records (audit hooks cannot be removed,
#: so the hook stays installed and only collects while a test has put a list here).
_OPENED: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _OPENED and isinstance(args[0], str | bytes | Path):
        _OPENED[-1].append(str(args[0]))


sys.addaudithook(_audit)


@pytest.mark.parametrize("name", sorted(EXPECTED_IO))
def test_exported_models_load_with_their_io(name):
    model = load_onnx(models.exported_model(name))
    assert (input_names(model), output_names(model)) == EXPECTED_IO[name]


def test_initializers_listed_as_inputs_are_not_inputs():
    model = models.small_mlp()
    model.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer
    )
    assert input_names(model) == ["x"]


def test_garbage_file_is_model_error(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\x08\xff\xff\xff not a protobuf \x00\x01")
    with pytest.raises(ModelError) as err:
        load_onnx(path)
    assert err.value.code == "E_MODEL_INVALID"
    assert err.value.detail["reason"]


def test_missing_file_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_onnx(tmp_path / "absent.onnx")


def test_checker_failure_is_model_error(tmp_path):
    node = helper.make_node("Relu", ["nowhere"], ["y"])
    graph = helper.make_graph(
        [node],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelError, match="invalid") as err:
        load_onnx(path)
    assert "nowhere" in err.value.detail["reason"]


def _point_outside(tensor: TensorProto, target: Path) -> None:
    """Turn a tensor into an external-data reference to `target`, a real file holding its bytes, named
    relative to the model's folder the way onnx writes it (so a loader that follows it would succeed)."""
    target.write_bytes(tensor.raw_data or onnx.numpy_helper.to_array(tensor).tobytes())
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=target.name)


@contextmanager
def _recording_opens() -> Iterator[list[str]]:
    opened: list[str] = []
    _OPENED.append(opened)
    try:
        yield opened
    finally:
        _OPENED.remove(opened)


def test_external_initializer_is_refused_without_opening_it(tmp_path):
    model = models.small_mlp()
    tensor = model.graph.initializer[1]
    secret = tmp_path / "secret.bin"
    _point_outside(tensor, secret)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with _recording_opens() as opened, pytest.raises(ExternalDataError) as err:
        load_onnx(path)
    assert err.value.code == "E_EXTERNAL_DATA"
    assert err.value.detail == {"field": "model", "tensor": tensor.name}
    assert tensor.name in err.value.message
    assert str(path) in opened, "the audit hook should see the model itself being read"
    assert str(secret) not in opened


def test_external_tensor_inside_a_constant_node_is_refused(tmp_path):
    value = onnx.numpy_helper.from_array(np.ones((1, 4), np.float32), "shift")
    _point_outside(value, tmp_path / "shift.bin")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=value), helper.make_node("Add", ["x", "c"], ["y"])],
        "const",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ExternalDataError, match="Constant") as err:
        load_onnx(path)
    assert err.value.detail["tensor"] == "shift"
