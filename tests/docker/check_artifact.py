"""Runs an artifact as its contract says (`tvm.runtime.load_module` + `relax.VirtualMachine` on the
CPU, the model's float inputs in ONNX order) on every sample of a batch-stacked calibration file,
and compares each output with ONNX Runtime's on the float model.

scripts/fresh-machine runs it on the artifact the README's quick start wrote, verify_stack on the
one the deployed service built. Exit status 0 when every sample agrees (cosine at least MIN_COSINE);
otherwise 1, and the last line says which sample did not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

MIN_COSINE = 0.95  # int8 against float outputs; a broken requantization lands far below


class ArtifactMismatch(Exception):
    """The artifact's output differs in shape or value from the float model's."""


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def min_cosine_to_float(artifact: Path, model: Path, calibration: Path) -> tuple[float, int]:
    """The lowest cosine similarity over samples and outputs, and how many samples ran. Each sample
    is fed alone (a batch of one, which the model's batch axis must admit)."""
    import onnxruntime
    import tvm
    from tvm import relax

    session = onnxruntime.InferenceSession(str(model))
    names = [i.name for i in session.get_inputs()]
    data = np.load(calibration, allow_pickle=False)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(artifact)), tvm.cpu())
    samples = min(len(data[name]) for name in names)
    worst = 1.0
    for k in range(samples):
        feeds = [data[name][k : k + 1] for name in names]
        expected = session.run(None, dict(zip(names, feeds, strict=True)))
        out = vm["main"](*(tvm.runtime.tensor(f) for f in feeds))
        got = [o.numpy() for o in out] if isinstance(out, tvm.ir.Array | tuple | list) else [out.numpy()]
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            if g.shape != e.shape:
                raise ArtifactMismatch(
                    f"sample {k} output {i}: shape {g.shape}, the float model gives {e.shape}"
                )
            cosine = _cosine(g, e)
            if not cosine >= MIN_COSINE:
                raise ArtifactMismatch(
                    f"sample {k} output {i}: cosine {cosine:.4f} < {MIN_COSINE} to ONNX Runtime"
                )
            worst = min(worst, cosine)
    return worst, samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("calibration", type=Path)
    args = parser.parse_args(argv)
    try:
        worst, samples = min_cosine_to_float(args.artifact, args.model, args.calibration)
    except (ArtifactMismatch, OSError) as exc:
        print(f"check_artifact: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"check_artifact: {args.artifact} ran on {samples} samples; lowest cosine to float {worst:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
