"""Unit tests: qconfig strictness, the op registry, integer requantize arithmetic, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from worker.errors import QConfigError
from worker.qconfig import QUANTIZABLE_OPS, QConfig, parse_qconfig
from worker.quantize.ops import RULES
from worker.quantize.qtensor import Emitter, QTensor, fixed_point


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"nbit_inptu": 8}, "nbit_inptu"),
        ({"percentile": 20}, "percentile"),
        ({"nbit_activation": 12}, "nbit_activation"),
        ({"exclude_ops": ["softmax"]}, "exclude_ops"),
        ({"target": "cuda"}, "target"),
        ({"calibrate_chunk_by": 0}, "calibrate_chunk_by"),
        ({"do_simulation": True, "partition_conversions": "fully_integral"}, "qconfig"),
    ],
)
def test_qconfig_rejects_with_field(data, field):
    with pytest.raises(QConfigError) as err:
        parse_qconfig(data)
    assert err.value.detail["field"] == field
    assert err.value.one_line().startswith("error[E_QCONFIG]: ")


def test_legacy_target_string_becomes_dict():
    assert QConfig(target="llvm -mcpu=znver3").target_dict() == {"kind": "llvm", "mcpu": "znver3"}


def test_registry_matches_qconfig_op_names():
    """The service validates exclude_ops with the TVM-free copy: it must be the registry's names."""
    assert sorted(RULES) == sorted(QUANTIZABLE_OPS), f"QUANTIZABLE_OPS should be {tuple(sorted(RULES))}"


def _requantize_module(q_in: np.ndarray, in_scale, out_scale: float, rounding: str):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(q_in.shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            em = Emitter(bb, rounding=rounding)
            out = em.requantize(QTensor(x, "int32", np.asarray(in_scale)), out_scale, "int8")
            gv = bb.emit_output(out.expr)
        bb.emit_func_output(gv)
    mod = bb.get()
    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return mod, vm["main"](tvm.runtime.tensor(q_in)).numpy()


def _reference(q: np.ndarray, ratio, rounding: str) -> np.ndarray:
    exact = q.astype(np.float64) * ratio
    if rounding == "UPWARD":
        rounded = np.floor(exact + 0.5)
    else:
        rounded = np.sign(exact) * np.floor(np.abs(exact) + 0.5)
    return np.clip(rounded, -127, 127)


@pytest.mark.parametrize("rounding", ["UPWARD", "TONEAREST"])
def test_requantize_power_of_two_is_shift_only_and_exact(rounding):
    q = np.arange(-5000, 5000, 7, dtype=np.int32).reshape(1, -1)
    mod, out = _requantize_module(q, 2.0**-10, 2.0**-5, rounding)
    np.testing.assert_array_equal(out, _reference(q, 2.0**-5, rounding))
    text = mod.script()
    assert "R.multiply" not in text and "right_shift" in text


@pytest.mark.parametrize("rounding", ["UPWARD", "TONEAREST"])
def test_requantize_fixed_point_matches_rounding(rounding):
    """To int8 the requantize runs in int32 (no 64-bit vector multiply on AVX2): within 1 of exact
    rounding, and different from it only next to a tie."""
    rng = np.random.default_rng(0)
    q = rng.integers(-(2**24), 2**24, size=(4, 257), dtype=np.int32)
    q[0, :8] = [-3, -2, -1, 0, 1, 2, 3, 2**24 - 1]
    q[1, :4] = [2**31 - 1, -(2**31) + 1, 2**20, -(2**20)]
    ratio = 0.3 / 517.0
    mod, out = _requantize_module(q, 0.3, 517.0, rounding)
    assert "int64" not in mod.script()
    exact = q.astype(np.float64) * ratio
    differs = out != _reference(q, ratio, rounding)
    assert np.max(np.abs(out - _reference(q, ratio, rounding))) <= 1
    assert np.all(np.abs(np.abs(exact[differs]) % 1 - 0.5) < 2**-6), exact[differs]


def test_requantize_per_channel():
    q = np.arange(-64, 64, dtype=np.int32).reshape(1, 2, 8, 8) * 37
    scales = np.array([0.01, 0.003]).reshape(1, 2, 1, 1)
    _, out = _requantize_module(q, scales, 0.5, "UPWARD")
    exact = q * (scales / 0.5)
    differs = out != _reference(q, scales / 0.5, "UPWARD")
    # only exact .5 ties may differ: 0.02 is not a dyadic fraction, the 31-bit multiplier is
    np.testing.assert_allclose(np.abs(exact[differs] % 1), 0.5, atol=1e-6)
    assert differs.sum() <= 2


def test_fixed_point_multiplier_range():
    mult, shift = fixed_point(np.array([1e-7, 0.25, 0.3, 0.999999, 3.7]))
    assert np.all((mult >= 2**30) & (mult < 2**31))
    np.testing.assert_allclose(
        mult * np.exp2(-shift.astype(float)), [1e-7, 0.25, 0.3, 0.999999, 3.7], rtol=2e-9
    )


def test_target_cpu_is_checked_and_bare_llvm_gets_portable_avx2():
    from worker.build import PORTABLE_AVX2_CPU, make_target, resolve_target

    with pytest.raises(QConfigError) as err:
        make_target({"kind": "llvm", "mcpu": "bogus"})
    assert err.value.detail["field"] == "target"
    assert resolve_target({"kind": "llvm", "mcpu": "znver3"}) == {"kind": "llvm", "mcpu": "znver3"}
    resolved = resolve_target({"kind": "llvm"})
    assert resolved in ({"kind": "llvm"}, {"kind": "llvm", "mcpu": PORTABLE_AVX2_CPU})
    if "avx2" in Path("/proc/cpuinfo").read_text():
        assert resolved["mcpu"] == PORTABLE_AVX2_CPU
