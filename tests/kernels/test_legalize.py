"""Our legalization rules. Float exp / erf / tanh / sigmoid run on TVM's vectorizable
approximations, within a few float32 ulps of the exact functions over the whole range a network
feeds them (saturated tails included).

Measured on these inputs (float64 references): libm's erf 4e-8, fast 3.3e-7 absolute; tanh 9e-8 vs
2.5e-7; exp 6e-8 vs 2.5e-7 relative; sigmoid 9e-8 either way; GELU (0.5 x (1 + erf(x / sqrt 2)),
whose 1 + erf cancels for x < -3) 4.3e-7 vs 1.5e-6 absolute. int32 floor division is exact in
float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax import op as R

from tests.kernels import graphs
from worker.kernels import compile_module, legalize
from worker.quantize.activations import collapse_activations

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
SHAPE = (1, 4, 50, 60)

_erf = np.vectorize(math.erf)
FUNCTIONS = {
    # name: (Relax op, float64 reference, absolute tolerance beside rtol 1e-6, about 8 ulps)
    "exp": (R.exp, np.exp, 1.2e-38),  # exp(-100) is subnormal: flushed to 0
    "erf": (R.erf, _erf, 5e-7),
    "tanh": (R.tanh, np.tanh, 5e-7),
    "sigmoid": (R.sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x)), 2e-7),
    "gelu": (
        lambda x: R.multiply(
            R.multiply(x, R.add(R.erf(R.multiply(x, relax.const(0.70710677))), relax.const(1.0))),
            relax.const(0.5),
        ),
        lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
        3e-6,
    ),
}


def _module(op) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(SHAPE, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(op(x))
        bb.emit_func_output(out)
    return bb.get()


def _inputs(name: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(SHAPE) * 6).astype(np.float32)
    tails = [-100.0, -30.0, -9.0, -4.0, -1e-6, 0.0, 1e-6, 4.0, 9.0, 30.0, 100.0]
    if name == "exp":  # exp's own range: what a softmax feeds it (x - max <= 0) and up to float32's limit
        tails = [-100.0, -87.0, -20.0, -1e-6, 0.0, 1e-6, 20.0, 80.0]
    x.flat[: len(tails)] = tails
    return x


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_fast_functions_are_accurate(name: str) -> None:
    op, reference, atol = FUNCTIONS[name]
    x = _inputs(name)
    actual = graphs.run(compile_module(_module(op), TARGET), x).astype(np.float64)
    np.testing.assert_allclose(actual, reference(x.astype(np.float64)), rtol=1e-6, atol=atol)


def _legalized(mod: tvm.IRModule) -> str:
    return legalize.legalize_passes()[0](mod).script()


def test_no_transcendental_op_is_left_for_libm() -> None:
    """Every float exp / erf / tanh / sigmoid / softmax is lowered on an approximation, also in a
    module whose main calls another Relax function (TVM's FastMathTransform fails on those)."""
    ops = [FUNCTIONS[n][0] for n in ("exp", "erf", "tanh", "sigmoid")]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(SHAPE, "float32"))
    with bb.function("helper", [x], private=True):
        with bb.dataflow():
            y = bb.emit_output(R.nn.softmax(ops[0](x), axis=1))
        bb.emit_func_output(y)
    helper = bb.get().get_global_var("helper")
    x = relax.Var("x", relax.TensorType(SHAPE, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.Call(helper, [x]))
            out = bb.emit_output(R.add(R.add(y, ops[1](x)), R.add(ops[2](x), ops[3](x))))
        bb.emit_func_output(out)
    text = _legalized(bb.get())
    assert all(f"fast_{f}" in text for f in ("exp", "erf", "tanh", "softmax")), text
    assert "T.erf(" not in text and "T.tanh(" not in text and "T.sigmoid(" not in text


def test_a_collapsed_activation_is_lowered_on_the_approximations() -> None:
    """The float build's GELU is one tvmq.elementwise call until LegalizeOps expands it: the
    expanded erf must get the fast rule too."""
    mod = collapse_activations(_module(FUNCTIONS["gelu"][0]))
    assert "tvmq.elementwise" in mod.script()
    assert "fast_erf" in _legalized(mod)


def test_integer_calls_keep_tvm_lowering() -> None:
    """Only float32 calls are approximated (an int exp would be an error upstream; a float64
    one keeps TVM's exact lowering)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(SHAPE, "float64"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(R.exp(x))
        bb.emit_func_output(out)
    assert "fast_exp" not in _legalized(bb.get())


def test_int32_floor_divide_is_exact_in_float64() -> None:
    """Every sign combination, quotients that are integers, and the int32 extremes (a softmax
    divides e * 254 + sum by 2 * sum, up to 2**31)."""
    rng = np.random.default_rng(4)
    a = rng.integers(-(2**31), 2**31, size=SHAPE, dtype=np.int64)
    b = rng.integers(1, 2**31, size=SHAPE, dtype=np.int64) * rng.choice([-1, 1], size=SHAPE)
    b.flat[:64] = rng.integers(1, 40, size=64)  # small divisors: many exact and near-integer quotients
    a.flat[:64] = b.flat[:64] * rng.integers(-1000, 1000, size=64) + rng.integers(-1, 2, size=64)
    a.flat[64:68] = [2**31 - 1, -(2**31), -(2**31), 2**31 - 1]
    b.flat[64:68] = [1, 1, -1 * 2**31 + 1, 2**31 - 1]
    bb = relax.BlockBuilder()
    xa = relax.Var("a", relax.TensorType(SHAPE, "int32"))
    xb = relax.Var("b", relax.TensorType(SHAPE, "int32"))
    with bb.function("main", [xa, xb]):
        with bb.dataflow():
            out = bb.emit_output(R.floor_divide(xa, xb))
        bb.emit_func_output(out)
    mod = bb.get()
    assert '"float64"' in _legalized(mod), "divided lane by lane in int32"
    vm = relax.VirtualMachine(compile_module(mod, TARGET), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(a.astype(np.int32)), tvm.runtime.tensor(b.astype(np.int32))).numpy()
    expected = np.floor_divide(a, b)
    keep = (expected >= -(2**31)) & (expected < 2**31)  # -2**31 // -1 overflows int32 either way
    np.testing.assert_array_equal(got[keep], expected[keep].astype(np.int32))
