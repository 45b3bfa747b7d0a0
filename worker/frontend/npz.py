"""Arrays behind the calibration contract: an .npz read member by member, never with pickle.

The headers (shape, dtype, unpacked size) come from each member's .npy header alone, so an upload is
checked in milliseconds without unpacking its data, and a member is read only when a feed needs it.
`ArraySource` is the seam for other stores (memory-mapped .npy files, arrays already in memory).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from worker.errors import CalibrationError

_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    nbytes: int  # unpacked size of the data


class ArraySource(Protocol):
    """Named arrays: every header up front, each array's data on request."""

    def headers(self) -> dict[str, Header]: ...

    def read(self, key: str) -> np.ndarray: ...


class NpzArchive:
    """An .npz file (np.savez / np.savez_compressed): keys are member names without ".npy"."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._headers = _read_headers(self.path)

    def headers(self) -> dict[str, Header]:
        return self._headers

    def read(self, key: str) -> np.ndarray:
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(f"{key}.npy") as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise CalibrationError(
                f"calibration array '{key}' cannot be read ({exc}); store plain numeric arrays with np.savez",
                field="calibration",
                input=key,
            ) from exc


class InMemory:
    """Arrays already in memory (tests, synthetic evaluation inputs)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._arrays = {k: np.asarray(v) for k, v in arrays.items()}

    def headers(self) -> dict[str, Header]:
        return {k: Header(tuple(a.shape), a.dtype, a.nbytes) for k, a in self._arrays.items()}

    def read(self, key: str) -> np.ndarray:
        return self._arrays[key]


def _read_headers(path: Path) -> dict[str, Header]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        if _is_npy(path):
            raise CalibrationError(
                "calibration data must be an .npz archive (np.savez) keyed by input name, not a single "
                ".npy array",
                field="calibration",
            ) from None
        raise CalibrationError(
            f"calibration data must be an .npz archive (np.savez) keyed by model input name: {exc}",
            field="calibration",
        ) from None
    headers = {}
    with archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            try:
                with archive.open(info) as member:
                    shape, dtype = _npy_header(member)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise CalibrationError(
                    f"calibration entry '{key}' is not a numpy array: {exc}", field="calibration", input=key
                ) from None
            if dtype.hasobject:
                raise CalibrationError(
                    f"calibration array '{key}' holds Python objects, which cannot be read without pickle; "
                    "store plain numeric arrays (np.savez of numbers, not object arrays)",
                    field="calibration",
                    input=key,
                )
            dims = tuple(int(d) for d in shape)
            # What the header declares, not the member's size: a 1 KiB member may declare 100 GB.
            headers[key] = Header(dims, dtype, math.prod(dims) * dtype.itemsize)
    return headers


def _npy_header(member) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return shape, np.dtype(dtype)


def _is_npy(path: Path) -> bool:
    try:
        with Path(path).open("rb") as f:
            return f.read(len(_NPY_MAGIC)) == _NPY_MAGIC
    except OSError:
        return False
