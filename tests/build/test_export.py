"""export's link step: without a usable C toolchain the error says what is missing and how to get it
(TVM alone fails with `expected str, bytes or os.PathLike object, not NoneType`, or with the
linker's command line and nothing else)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from worker.build import export
from worker.errors import BuildError


@pytest.fixture(scope="module")
def executable() -> relax.VMExecutable:
    @tvm.script.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((4,), "float32")) -> R.Tensor((4,), "float32"):
            return R.add(x, x)

    return tvm.compile(Module, "llvm")


def test_no_compiler_on_path_names_the_packages(executable, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BuildError) as info:
        export(executable, tmp_path / "model.so")
    message = info.value.one_line()
    assert "needs a C compiler" in message and "apt-get install gcc libc6-dev" in message, message
    assert info.value.detail == {"artifact": "model.so"}
    assert not (tmp_path / "model.so").exists()


def test_failing_link_step_shows_the_linkers_complaint(executable, tmp_path: Path, monkeypatch) -> None:
    # gcc without libc6-dev: compiles, but `gcc -shared` cannot find the C runtime objects.
    linker = tmp_path / "gcc-without-libc6-dev"
    linker.write_text(
        "#!/bin/sh\necho '/usr/bin/ld: cannot find crti.o: No such file or directory'\nexit 1\n"
    )
    linker.chmod(0o755)
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("CC", str(linker))
    with pytest.raises(BuildError) as info:
        export(executable, tmp_path / "model.so")
    message = info.value.one_line()
    assert "cannot find crti.o" in message and "libc6-dev" in message, message


def test_export_links_with_the_toolchain_found(executable, tmp_path: Path) -> None:
    path = export(executable, tmp_path / "model.so")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(np.arange(1, 5, dtype="float32")))
    assert out.numpy().tolist() == [2, 4, 6, 8]
