"""Fixtures for the front-door tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def save_npz(tmp_path: Path):
    """Write arrays to an .npz under tmp_path and return its path."""

    def save(**arrays: np.ndarray) -> Path:
        path = tmp_path / "calibration.npz"
        np.savez(path, **arrays)
        return path

    return save
