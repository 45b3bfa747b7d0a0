"""The engines the corpus compares, each reduced to a Runner, and the child processes that make
their artifacts (ORT's quantizer, `tvmq quantize`) under a time limit.

A child that fails is an outcome (code + message) for the table: an `error[CODE]` line of the tvmq
CLI, the last line of a Python traceback, a signal, or the harness's own E_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.realmodels.corpus import Runner
from bench.realmodels.wheels import ROOT

_ERROR_LINE = re.compile(r"error\[(E_[A-Z_]+)\]: (.*)")


@dataclass
class Outcome:
    code: str  # "ok", an E_* code, "crash", "exception"
    message: str = ""
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == "ok"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: process groups of the children running now, ended with us (see end_children_on_sigterm)
_RUNNING: set[int] = set()


def run_child(
    cmd: list[str], timeout: float, env: dict[str, str], capture: bool = True, cwd: Path = ROOT
) -> tuple[int | None, str, str, float]:
    """(returncode or None on timeout, stdout, stderr, seconds). The child gets its own process
    group; when the time is up it gets SIGTERM (a model process then ends its own children), and
    SIGKILL for the whole group 10 s later. Without `capture` its output goes to ours."""
    start = time.perf_counter()
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=pipe, stderr=pipe, text=True, start_new_session=True
    )
    _RUNNING.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        _kill_group(proc.pid)
        out, err = proc.communicate()
        code = None
    finally:
        _RUNNING.discard(proc.pid)
    return code, out or "", err or "", round(time.perf_counter() - start, 1)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def end_children_on_sigterm() -> None:
    """In a model process: SIGTERM (the parent's time bound) ends the running tvmq/ORT child too,
    whose own process group a group kill of ours would not reach."""

    def handler(signum: int, frame: object) -> None:
        for pgid in list(_RUNNING):
            _kill_group(pgid)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def failure(code: int | None, err: str, seconds: float, timeout: float) -> Outcome:
    """The outcome of a child that did not succeed, from its exit status and stderr."""
    if code is None:
        return Outcome("E_TIMEOUT", f"no result after {timeout:.0f} s (harness limit)", seconds)
    if code < 0:
        return Outcome("crash", f"killed by {signal.Signals(-code).name}", seconds)
    lines = [line.strip() for line in err.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        match = _ERROR_LINE.search(line)
        if match:
            return Outcome(match.group(1), match.group(2), seconds)
    return Outcome("exception", lines[-1] if lines else f"exit status {code}", seconds)


def ort_quantize(src: Path, dst: Path, calibration: Path, per_channel: bool, timeout: float) -> Outcome:
    src, dst, calibration = src.resolve(), dst.resolve(), calibration.resolve()
    dst.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.realmodels.ort_quantize", str(src), str(dst), str(calibration)]
    # ORT's pre-processing leaves temporary files in its working directory: the model's work folder
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
    }
    flags = ["--per-channel"] if per_channel else []
    code, _, err, seconds = run_child([*cmd, *flags], timeout, env, cwd=dst.parent)
    if code == 0 and dst.exists():
        notes = json.loads(dst.with_suffix(".json").read_text())
        return Outcome("ok", seconds=seconds, info={"quantize_nodes": quantize_nodes(dst), **notes})
    return failure(code, err, seconds, timeout)


def quantize_nodes(path: Path) -> int:
    """QuantizeLinear nodes of a model, subgraphs (If/Loop bodies) included: 0 means ORT left the
    model float, and then its "int8" figures are fp32's."""
    import onnx

    def count(graph: onnx.GraphProto) -> int:
        total = 0
        for node in graph.node:
            total += node.op_type == "QuantizeLinear"
            total += sum(count(a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH)
        return total

    return count(onnx.load(str(path)).graph)


def tvmq_quantize(
    model: Path, calibration: Path, qconfig: dict[str, Any], out: Path, timeout: float
) -> Outcome:
    """`tvmq quantize` as a user runs it; on success `info` has the report's figures."""
    shutil.rmtree(out, ignore_errors=True)  # no artifact of an earlier run may pass for this one
    out.mkdir(parents=True)
    qconfig_path = out.parent / f"{out.name}.qconfig.json"
    qconfig_path.write_text(json.dumps(qconfig))
    cmd = [sys.executable, "-m", "worker.cli", "quantize", str(model), "-c", str(calibration)]
    code, _, err, seconds = run_child(
        [*cmd, "-q", str(qconfig_path), "-o", str(out)], timeout, dict(os.environ)
    )
    if code != 0 or not (out / "model.so").exists():
        return failure(code, err, seconds, timeout)
    report = json.loads((out / "report.json").read_text())
    kept = [op for op in report["integrality"]["ops"] if op["group"] == "float_fallback"]
    reasons: dict[str, int] = {}
    for op in kept:
        reasons[f"{op['relax_op']} ({op['reason']})"] = (
            reasons.get(f"{op['relax_op']} ({op['reason']})", 0) + 1
        )
    info = {
        "float_ops": len(kept),  # the float fallback group: not the quantize/dequantize conversions
        "float_reasons": reasons,
        "float_in_core": report["integrality"]["float_in_core"],
        "stage_seconds": report["provenance"]["stage_seconds"],
    }
    if report.get("search"):
        info["search"] = _search_summary(report["search"])
    return Outcome("ok", seconds=seconds, info=info)


def _search_summary(search: dict[str, Any]) -> dict[str, Any]:
    """What the corpus table says of a search: verdict, budget used and what the winner changed."""
    winner = search["trials"][search["winner"]]
    return {
        "metric": search["metric"],
        "target": search["target"],
        "samples": search["samples"],
        "verdict": search["verdict"],
        "trials": len(search["trials"]),
        "winner": search["winner"],
        "winner_delta": search["winner_delta"],
        "winner_metric": winner["metric"],
        "built_metric": search.get("built_metric"),
        "float_layers": winner["float_layers"],
        "integer_mac_share": winner.get("integer_mac_share"),
        "seconds": search["seconds"],
        "stopped": search.get("stopped"),
    }


def ort_runner(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ddddocr's common.onnx declares a wrong output shape: one warning a run
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)


def tvm_runner(artifact: Path, input_names: list[str]) -> Runner:
    """The artifact contract: load_module + VirtualMachine, inputs in ONNX order, outputs likewise."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact)), tvm.cpu())
    main = vm["main"]

    def run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        # np.require keeps a 0-d feed 0-d (np.ascontiguousarray makes it 1-d: silero's sr)
        out = main(*[tvm.runtime.tensor(np.require(feed[name], requirements="C")) for name in input_names])
        return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]

    return run
