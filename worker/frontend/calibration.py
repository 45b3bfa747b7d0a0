"""The calibration data contract: two .npz layouts, one sequence of feeds.

- batch-stacked: keys are the ONNX input names, each array stacks samples on axis 0; a dynamic
  batch is compiled as 1 and a static batch B takes the samples B at a time (a short last feed
  wraps around to the start), other dynamic dims come from the arrays.
- per-sample: keys are "<k>/<input name>" (k = 0..N-1), every k has every input, each array is
  exactly one feed of that input (the model input's rank); the first feed fixes the dynamic dims
  and every feed of an input has that shape. This expresses scalars, state tensors whose batch axis
  is not 0, and inputs of different batch shape. A file is per-sample iff every key is digits + "/".

Every input's samples come in the model input's own kind: float inputs any float dtype (cast to the
model's), integer inputs (ids, bytes, lengths, sample rates) an integer dtype, bool inputs bool.

`CalibrationSet` is that data as a sequence of feeds for the compiled model, whatever the layout:
calibration, the hold-out split, verification and the performance run all read it. It reads
lazily: the structure is checked from the .npy headers alone (what the API does), a stacked array
is read once when first needed, a per-sample feed each time it is fed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from worker.errors import CalibrationError
from worker.frontend.model import ModelInput, model_inputs
from worker.frontend.npz import ArraySource, Header, InMemory, NpzArchive

Layout = Literal["stacked", "per_sample"]

_PER_SAMPLE_KEY = re.compile(r"(\d+)/(.+)")


@dataclass
class _Store:
    """The source and the stacked arrays already read, shared by the views of one data set."""

    source: ArraySource
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def stacked(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            self.arrays[name] = self.source.read(name)
        return self.arrays[name]


class CalibrationSet:
    """Samples of every model input, fed to the compiled model `batch` samples at a time."""

    def __init__(
        self,
        store: _Store,
        inputs: list[ModelInput],
        layout: Layout,
        shapes: dict[str, tuple[int, ...]],
        batch: int,
        start: int,
        stop: int,
    ) -> None:
        self._store = store
        self.inputs = inputs
        self.layout = layout
        #: the static shape every input is compiled for (one feed's shape)
        self.shapes = shapes
        #: samples per feed: the static batch B in the stacked layout, else 1
        self.batch = batch
        self._start, self._stop = start, stop

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def open(
        cls, source: ArraySource, inputs: list[ModelInput], max_unpacked_bytes: int | None = None
    ) -> CalibrationSet:
        """Check the structure against the model's inputs from the headers alone (no data read)."""
        headers = source.headers()
        if not headers:
            raise CalibrationError("the calibration archive holds no arrays", field="calibration")
        unpacked = sum(h.nbytes for h in headers.values())
        if max_unpacked_bytes is not None and unpacked > max_unpacked_bytes:
            raise CalibrationError(
                f"calibration arrays take {unpacked} bytes unpacked, more than the limit of "
                f"{max_unpacked_bytes}",
                field="calibration",
            )
        store = _Store(source)
        if all(_PER_SAMPLE_KEY.fullmatch(key) for key in headers):
            shapes, count = _check_per_sample(headers, inputs)
            return cls(store, inputs, "per_sample", shapes, 1, 0, count)
        shapes, count, batch = _check_stacked(headers, inputs)
        return cls(store, inputs, "stacked", shapes, batch, 0, count)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], inputs: list[ModelInput]) -> CalibrationSet:
        """Arrays in memory, keyed as in an .npz of either layout."""
        return cls.open(InMemory(arrays), inputs)

    @classmethod
    def synthetic(
        cls, inputs: list[ModelInput], shapes: dict[str, tuple[int, ...]], feeds: int = 4, seed: int = 0
    ) -> CalibrationSet:
        """Stand-in feeds when there is no data at all (global_scale): seeded standard-normal floats,
        zeros for integer and bool inputs (a valid id, length or flag for any model)."""
        rng = np.random.default_rng(seed)
        arrays = {
            f"{k}/{spec.name}": rng.standard_normal(shapes[spec.name]).astype(spec.dtype)
            if spec.kind == "float"
            else np.zeros(shapes[spec.name], spec.dtype)
            for k in range(feeds)
            for spec in inputs
        }
        return cls.from_arrays(arrays, inputs)

    # -- the sequence of feeds --------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def samples(self) -> int:
        return self._stop - self._start

    def feed_count(self, limit: int | None = None) -> int:
        count = -(-self.samples // self.batch)
        return count if limit is None else min(count, limit)

    def feeds(self, limit: int | None = None) -> Iterator[list[np.ndarray]]:
        """Each feed: one array per input in ONNX input order, in the model input's dtype."""
        for j in range(self.feed_count(limit)):
            yield self.feed(j)

    def feed(self, j: int) -> list[np.ndarray]:
        if self.layout == "per_sample":
            k = self._start + j
            return [_cast(self._store.source.read(f"{k}/{s.name}"), s) for s in self.inputs]
        rows = self._start + np.arange(j * self.batch, (j + 1) * self.batch) % self.samples
        return [_cast(self._store.stacked(s.name)[rows], s) for s in self.inputs]

    def split_holdout(self, holdout: int | None) -> tuple[CalibrationSet, CalibrationSet | None]:
        """(calibration part, held-out part) over the samples. Default hold-out: N//5 when that
        leaves both sides at least one feed; `holdout` (the qconfig's holdout_samples) overrides."""
        count = self.samples
        if holdout is None:
            fifth = count // 5
            holdout = fifth if fifth >= self.batch and count - fifth >= self.batch else 0
        if holdout >= count:
            raise CalibrationError(
                f"holdout_samples={holdout} leaves no calibration samples (the data has {count})",
                field="holdout_samples",
            )
        if holdout == 0:
            return self, None
        cut = self._start + count - holdout
        return self._view(self._start, cut), self._view(cut, self._stop)

    def _view(self, start: int, stop: int) -> CalibrationSet:
        return CalibrationSet(self._store, self.inputs, self.layout, self.shapes, self.batch, start, stop)

    # -- values -----------------------------------------------------------------------------------
    def values(self, name: str) -> np.ndarray:
        """Every sample of one input stacked on a new axis 0 (per-sample) or as stored (stacked);
        meant for small inputs (a sample rate, a flag): it reads them all."""
        if self.layout == "stacked":
            return self._store.stacked(name)[self._start : self._stop]
        return np.stack([self._store.source.read(f"{k}/{name}") for k in range(self._start, self._stop)])

    def check_values(self) -> None:
        """Read every array once: floats must be finite in the model's dtype, integers in its range."""
        if self.layout == "stacked":
            for spec in self.inputs:
                _check_values(self._store.stacked(spec.name), spec, "sample")
            return
        for k in range(self._start, self._stop):
            for spec in self.inputs:
                _check_values(self._store.source.read(f"{k}/{spec.name}")[None], spec, "feed", k)


def load_calibration(
    path: Path | None, model: onnx.ModelProto, max_unpacked_bytes: int | None = None
) -> CalibrationSet | None:
    """Open and fully check calibration data (structure, then every value); None without a file."""
    if path is None:
        return None
    calibration = CalibrationSet.open(NpzArchive(Path(path)), model_inputs(model), max_unpacked_bytes)
    calibration.check_values()
    return calibration


# -- checks ---------------------------------------------------------------------------------------
def _check_stacked(
    headers: dict[str, Header], inputs: list[ModelInput]
) -> tuple[dict[str, tuple[int, ...]], int, int]:
    names = [spec.name for spec in inputs]
    missing = [n for n in names if n not in headers]
    extra = [k for k in headers if k not in names]
    if missing or extra:
        hint = (
            "; per-sample keys are '<k>/<input name>' for every key"
            if any(_PER_SAMPLE_KEY.fullmatch(k) for k in headers)
            else ""
        )
        raise CalibrationError(
            f"calibration keys must be the model's inputs {sorted(names)}; "
            f"missing {missing}, not model inputs {extra}{hint}",
            field="calibration",
            input=(missing or extra)[0],
        )
    batches = {spec.name: spec.dims[0] or 1 for spec in inputs if spec.dims}
    for spec in inputs:
        header = headers[spec.name]
        _check_dtype(spec, header.dtype)
        if not spec.dims:
            raise CalibrationError(
                f"input '{spec.name}' is a scalar, so stacked samples (axis 0) cannot hold it; use the "
                f"per-sample layout (keys '0/{spec.name}', '1/{spec.name}', ...)",
                field="calibration",
                input=spec.name,
            )
        _check_rank_and_static(spec, header.shape, "stacked")
        batch = batches[spec.name]
        if header.shape[0] < 1 or header.shape[0] % batch:
            need = "at least one sample" if batch == 1 else f"a multiple of its static batch {batch} samples"
            raise CalibrationError(
                f"input '{spec.name}' needs {need} along axis 0, got {header.shape[0]} "
                f"(shape {header.shape})",
                field="calibration",
                input=spec.name,
            )
    counts = {spec.name: headers[spec.name].shape[0] for spec in inputs}
    if len(set(counts.values())) > 1:
        first = next(iter(counts.values()))
        odd = next(name for name, n in counts.items() if n != first)
        raise CalibrationError(
            f"every calibration input must hold the same number of samples N; got {counts}",
            field="calibration",
            input=odd,
        )
    if len(set(batches.values())) > 1:
        raise CalibrationError(
            f"the inputs' batch sizes differ ({batches}; a dynamic batch is compiled as 1), so stacked "
            "samples cannot be split into feeds; use the per-sample layout (keys '<k>/<input name>')",
            field="calibration",
            input=next(iter(batches)),
        )
    batch = next(iter(batches.values()))
    shapes = {spec.name: (batch, *headers[spec.name].shape[1:]) for spec in inputs}
    return shapes, next(iter(counts.values())), batch


def _check_per_sample(
    headers: dict[str, Header], inputs: list[ModelInput]
) -> tuple[dict[str, tuple[int, ...]], int]:
    by_name = {spec.name: spec for spec in inputs}
    feeds: set[int] = set()
    for key in headers:
        index, name = _PER_SAMPLE_KEY.fullmatch(key).groups()
        if str(int(index)) != index:
            raise CalibrationError(
                f"calibration key '{key}': write the feed index without leading zeros "
                f"('{int(index)}/{name}')",
                field="calibration",
                input=name,
            )
        if name not in by_name:
            raise CalibrationError(
                f"calibration key '{key}': '{name}' is not a model input (inputs: {sorted(by_name)})",
                field="calibration",
                input=name,
                feed=int(index),
            )
        feeds.add(int(index))
    count = max(feeds) + 1
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(count):
        for spec in inputs:
            header = headers.get(f"{k}/{spec.name}")
            if header is None:
                raise CalibrationError(
                    f"feed {k} has no array for input '{spec.name}' (key '{k}/{spec.name}'); every feed "
                    f"0..{count - 1} must hold every input",
                    field="calibration",
                    input=spec.name,
                    feed=k,
                )
            _check_dtype(spec, header.dtype, feed=k)
            if k == 0:
                _check_rank_and_static(spec, header.shape, "per_sample")
                shapes[spec.name] = header.shape
            elif header.shape != shapes[spec.name]:
                raise CalibrationError(
                    f"input '{spec.name}' feed {k} has shape {header.shape}, feed 0 has "
                    f"{shapes[spec.name]}: every feed of an input has one shape",
                    field="calibration",
                    input=spec.name,
                    feed=k,
                )
    return {spec.name: shapes[spec.name] for spec in inputs}, count


def _check_rank_and_static(spec: ModelInput, shape: tuple[int, ...], layout: Layout) -> None:
    """Rank and static dims: axis 0 is the sample axis in the stacked layout, a model dim per sample."""
    skip = 1 if layout == "stacked" else 0
    mismatch = any(d is not None and d != s for d, s in zip(spec.dims[skip:], shape[skip:], strict=False))
    if len(shape) != len(spec.dims) or mismatch:
        expected = spec.show("N") if layout == "stacked" else spec.show()
        where = "" if layout == "stacked" else " in feed 0"
        raise CalibrationError(
            f"input '{spec.name}' expects {expected}, got {shape}{where}",
            field="calibration",
            input=spec.name,
            **({} if layout == "stacked" else {"feed": 0}),
        )


def _check_dtype(spec: ModelInput, dtype: np.dtype, feed: int | None = None) -> None:
    where = "" if feed is None else f" (feed {feed})"
    wanted = {"float": "f", "int": "iu", "bool": "b"}[spec.kind]
    if dtype.kind in wanted:
        return
    need = {
        "float": "floating-point samples (float16/32/64)",
        "int": f"integer samples (the model takes {spec.dtype}: ids, bytes, lengths, rates; not float)",
        "bool": "bool samples",
    }[spec.kind]
    raise CalibrationError(
        f"input '{spec.name}' needs {need}, got {dtype}{where}",
        field="calibration",
        input=spec.name,
        feed=feed,
    )


def _check_values(array: np.ndarray, spec: ModelInput, unit: str, offset: int = 0) -> None:
    """Values of one stacked array (samples on axis 0) or one feed (given a leading axis of 1)."""
    if spec.kind == "float":
        with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, reported below
            finite = np.isfinite(array.astype(spec.dtype, copy=False))
        bad = int(finite.size - np.count_nonzero(finite))
        if bad:
            first = offset + int(np.argwhere(~finite)[0][0])
            raise CalibrationError(
                f"input '{spec.name}' has {bad} non-finite values (NaN/inf, or beyond {spec.dtype} range), "
                f"the first in {unit} {first}; calibration samples must be finite",
                field="calibration",
                input=spec.name,
                **{unit: first},
            )
    elif spec.kind == "int" and array.size and array.dtype != spec.dtype:
        info = np.iinfo(spec.dtype)
        outside = (array < info.min) | (array > info.max)
        if outside.any():
            first = offset + int(np.argwhere(outside)[0][0])
            raise CalibrationError(
                f"input '{spec.name}' has values outside {spec.dtype} [{info.min}, {info.max}], the first "
                f"in {unit} {first}",
                field="calibration",
                input=spec.name,
                **{unit: first},
            )


def _cast(array: np.ndarray, spec: ModelInput) -> np.ndarray:
    """C-contiguous in the model's dtype, without a copy when it is already (and 0-d stays 0-d,
    which np.ascontiguousarray would make 1-d)."""
    return np.require(array, dtype=spec.dtype, requirements="C")
