"""Writes the bundled example (examples/cnn/): a small residual CNN classifier as ONNX, 32
calibration samples and a qconfig, so the README's commands have something real to quantize.

Run: .venv/bin/python examples/make_example.py  (the files it writes are committed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from tests.models import random_calibration, small_cnn  # noqa: E402


def main() -> None:
    out = ROOT / "cnn"
    out.mkdir(exist_ok=True)
    model = small_cnn(seed=7)
    onnx.save(model, out / "model.onnx")
    np.savez(out / "calibration.npz", **random_calibration(model, 32, seed=7))
    # the defaults already give per-channel max weights and every layer quantized
    qconfig = {"calibrate_mode": "kl_divergence", "partition_conversions": "fully_integral"}
    (out / "qconfig.json").write_text(json.dumps(qconfig, indent=2) + "\n")


if __name__ == "__main__":
    main()
