"""Each ISA of the table: its int8 kernels exactly equal TVM's own lowering, and its instruction is
in the object code.

Three layers of proof, so an ISA this CPU lacks is still checked by construction:
1. the numpy model of the packed kernels (tests/kernels/reference.py) equals TVM for every ISA;
2. every ISA's kernels, with its intrinsic replaced by the intrinsic's own scalar description,
   run here and equal TVM (lanes, packing, indexing, register tiles, shift correction);
3. the real kernels run where the CPU has the ISA (skipped elsewhere, naming the missing flag),
   and a build for a CPU that has it contains the instruction on the expected registers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.target import codegen

from tests.kernels import graphs, reference
from tests.kernels.isa_cases import (
    CASES,
    Case,
    emulated,
    host_target,
    host_target_for,
    missing_on_host,
    tvm_default,
)
from worker.kernels import compile_module, host, isa, packed
from worker.kernels.isa import ISA
from worker.kernels.rewrite import kernel_counts


def _name(entry: ISA) -> str:
    return entry.name


def _kernel(case: Case, entry: ISA) -> packed.Kernel:
    w = case.weights()
    if case.op == "conv2d":
        s, p, d = case.stride, case.pad, case.dilation
        return packed.conv2d_nchw(case.data_shape, w, (s, s), (p, p, p, p), (d, d), entry)
    return packed.matmul(case.data_shape, w, entry)


def _reference(case: Case, entry: ISA) -> np.ndarray:
    x, w = case.data(), case.weights()
    if case.op == "conv2d":
        s, p, d = case.stride, case.pad, case.dilation
        return reference.conv2d(x, w, (s, s), (p, p), (d, d), entry)
    return reference.matmul(x, w, entry)


def test_every_entry_is_complete() -> None:
    """Exact fallback last, real LLVM intrinsics, features the host check knows, unique names."""
    for entry in isa.TABLE:
        assert entry.dots[-1].pair_limit is None, entry.name
        assert entry.accumulators < entry.registers
        for dot in entry.dots:
            for name in dot.llvm:
                assert codegen.llvm_lookup_intrinsic_id(name) != 0, name
        assert all(f in host.LINUX_FLAGS for features in entry.requires for f in features)
    names = [entry.intrinsic(dot) for entry in isa.TABLE for dot in entry.dots]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        ("x86-64", None),
        ("haswell", "avx2"),
        ("znver1", "avx2"),
        ("znver3", "avx2"),
        ("skylake-avx512", "avx512bw"),
        ("alderlake", "avxvnni"),
        ("cascadelake", "avx512vnni"),
        ("icelake-server", "avx512vnni"),
        ("rocketlake", "avx512vnni"),
        ("sapphirerapids", "avx512vnni"),
        ("znver4", "avx512vnni"),
    ],
)
def test_cpu_name_picks_its_isa(cpu: str, expected: str | None) -> None:
    chosen = isa.select(tvm.target.Target({"kind": "llvm", "mcpu": cpu}))
    assert (chosen.name if chosen else None) == expected


def test_target_features_pick_the_isa_too() -> None:
    pick = lambda spec: isa.select(tvm.target.Target({"kind": "llvm", **spec})).name  # noqa: E731
    assert pick({"mcpu": "haswell", "mattr": ["+avxvnni"]}) == "avxvnni"
    assert pick({"mcpu": "sapphirerapids", "mattr": ["-avx512vnni"]}) == "avxvnni"
    assert pick({"mcpu": "icelake-server", "mattr": ["-avx512f"]}) == "avx2"


def test_saturation_rule() -> None:
    """vpmaddubsw pairs are exact up to |w0| + |w1| = 128; vpdpbusd is exact for any int8 weight."""
    u8s8 = isa.AVX2.dots[0]
    assert u8s8.pair_limit == 128
    assert u8s8.exact_for(np.array([-64, -64, 127, 1], np.int8))
    assert not u8s8.exact_for(np.array([-64, -65, 0, 0], np.int8))
    extreme = np.full((8, 8), -128, np.int8)
    assert packed.pack_weights(extreme, isa.AVX2)[2].name == "s16"
    assert packed.pack_weights(extreme, isa.AVX512BW)[2].name == "s16"
    for entry in (isa.AVX_VNNI, isa.AVX512_VNNI):
        assert packed.pack_weights(extreme, entry)[2].name == "u8s8"
    # the model saturates where the instruction does: 255 * -128 * 2 is below int16
    a, w = np.full((1, 4), 255), np.full((1, 1, 1, 4), -128)
    assert reference.dot(a, w, u8s8).item() == 2 * -32768
    assert reference.dot(a, w, isa.AVX512_VNNI.dots[0]).item() == 4 * 255 * -128


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("entry", isa.TABLE, ids=_name)
def test_reference_model_equals_tvm(entry: ISA, case: Case) -> None:
    np.testing.assert_array_equal(_reference(case, entry), tvm_default(case))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("entry", isa.TABLE, ids=_name)
def test_kernel_structure_equals_tvm_with_scalar_intrinsic(entry: ISA, case: Case) -> None:
    kernel = _kernel(case, emulated(entry))
    lib = tvm.tirx.build(tvm.IRModule({"main": kernel.scheduled()}), target=host_target())
    out = tvm.runtime.tensor(np.zeros(tvm_default(case).shape, np.int32))
    lib["main"](tvm.runtime.tensor(case.data()), *(tvm.runtime.tensor(c) for c in kernel.constants), out)
    np.testing.assert_array_equal(out.numpy(), tvm_default(case))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("entry", isa.TABLE, ids=_name)
def test_kernels_equal_tvm_on_this_cpu(entry: ISA, case: Case) -> None:
    reason = missing_on_host(entry)
    if reason is not None:
        pytest.skip(f"{entry.name} kernels cannot run here: {reason}")
    target = host_target_for(entry)
    assert isa.select(target) == entry
    executable = compile_module(case.relax_module(), target)
    assert kernel_counts(executable.as_text()) == {(entry.name, _kernel(case, entry).dot.name): 1}
    actual = graphs.run(executable, case.data())
    np.testing.assert_array_equal(actual, tvm_default(case))
    np.testing.assert_array_equal(actual, _reference(case, entry))


def _conv_and_matmul(weight_bits: int) -> tvm.IRModule:
    conv = Case("conv2d", (1, 16, 14, 14), 32, 3, 1, 1, weight_bits=weight_bits)
    mm = Case("matmul", (4, 64), 32, weight_bits=weight_bits)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(conv.data_shape, "int8"))
    y = relax.Var("y", relax.TensorType(mm.data_shape, "int8"))
    with bb.function("main", [x, y]):
        c = bb.emit(relax.op.nn.conv2d(x, relax.const(conv.weights()), 1, 1, out_dtype="int32"))
        m = bb.emit(relax.op.matmul(y, relax.const(mm.weights()), out_dtype="int32"))
        bb.emit_func_output(relax.Tuple([c, m]))
    return bb.get()


def _lines(asm: str, mnemonic: str, register: str) -> list[str]:
    return [line for line in asm.splitlines() if f"{mnemonic} " in line and f"%{register}" in line]


@pytest.mark.parametrize(
    ("cpu", "weight_bits", "present", "absent"),
    [
        ("haswell", 7, [("vpmaddubsw", "ymm")], [("vpdpbusd", "")]),
        ("haswell", 8, [("vpmaddwd", "ymm")], [("vpdpbusd", ""), ("vpmaddubsw", "")]),
        ("znver3", 7, [("vpmaddubsw", "ymm")], [("vpdpbusd", "")]),
        ("skylake-avx512", 7, [("vpmaddubsw", "zmm")], [("vpdpbusd", "")]),
        ("alderlake", 8, [("vpdpbusd", "ymm")], [("vpmaddubsw", "ymm"), ("vpmaddwd", "ymm")]),
        ("icelake-server", 8, [("vpdpbusd", "zmm")], [("vpmaddubsw", "zmm"), ("vpmaddwd", "zmm")]),
        ("sapphirerapids", 8, [("vpdpbusd", "zmm")], [("vpmaddubsw", "zmm"), ("vpmaddwd", "zmm")]),
    ],
    ids=lambda v: v if isinstance(v, str | int) else None,
)
def test_object_code_has_the_isa_instruction(
    tmp_path: Path, cpu: str, weight_bits: int, present: list, absent: list
) -> None:
    """Built (not run) for a CPU that has the ISA: its dot-product instruction on its registers;
    8-bit weights on VNNI need no int16 path."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not found (install binutils): cannot inspect the generated code")
    lib = tmp_path / "model.so"
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu})
    compile_module(_conv_and_matmul(weight_bits), target).export_library(str(lib))
    asm = subprocess.run([objdump, "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    for mnemonic, register in present:
        assert _lines(asm, mnemonic, register), f"no {mnemonic} on {register} for {cpu}"
    for mnemonic, register in absent:
        assert not _lines(asm, mnemonic, register), _lines(asm, mnemonic, register)[:3]


@pytest.mark.parametrize("entry", isa.TABLE, ids=_name)
@pytest.mark.parametrize("op", ["conv2d", "matmul"])
def test_float_kernel_structure_is_close_on_every_isa(entry: ISA, op: str) -> None:
    """The float32 kernels at each entry's vector width (8 or 16 lanes), with the FMA replaced by
    its scalar description: packing, lanes and register tiles, against a float64 numpy result."""
    rng = np.random.default_rng(6)
    twin = emulated(entry)
    if op == "conv2d":
        x = rng.standard_normal((1, 5, 9, 11)).astype(np.float32)
        w = rng.standard_normal((19, 5, 3, 3)).astype(np.float32)
        kernel = packed.conv2d_nchw(x.shape, w, (2, 1), (1, 1, 0, 1), (1, 1), twin)
        padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 0), (1, 1)))
        oh, ow = (padded.shape[2] - 3) // 2 + 1, padded.shape[3] - 2
        expected = sum(
            np.einsum("nchw,oc->nohw", padded[:, :, ry : ry + 2 * oh - 1 : 2, rx : rx + ow], w[:, :, ry, rx])
            for ry in range(3)
            for rx in range(3)
        )
    else:
        x = rng.standard_normal((7, 40)).astype(np.float32)
        w = rng.standard_normal((40, 35)).astype(np.float32)
        kernel = packed.matmul(x.shape, w, twin)
        expected = x.astype(np.float64) @ w
    assert kernel.dot is isa.FMA32 and kernel.constants[0].shape[-2] == entry.lanes
    lib = tvm.tirx.build(tvm.IRModule({"main": kernel.scheduled()}), target=host_target())
    out = tvm.runtime.tensor(np.zeros(expected.shape, np.float32))
    lib["main"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(c) for c in kernel.constants), out)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("cpu", "register"), [("haswell", "ymm"), ("skylake-avx512", "zmm")])
def test_float_kernels_use_fma_at_the_isa_width(tmp_path: Path, cpu: str, register: str) -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not found (install binutils): cannot inspect the generated code")
    mod = graphs.raw_conv("float32", (1, 16, 14, 14), 32, 3, 1, 1, 1, np.random.default_rng(0))
    lib = tmp_path / "model.so"
    compile_module(mod, tvm.target.Target({"kind": "llvm", "mcpu": cpu})).export_library(str(lib))
    asm = subprocess.run([objdump, "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert [line for line in asm.splitlines() if "vfmadd" in line and f"%{register}" in line]
