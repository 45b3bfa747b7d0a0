"""What the two text-line recognizers share: rendered strings in, greedy CTC decoding out, and
identical strings as the metric. A subclass says how a string becomes a feed and where the class
scores are in the output."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from bench.realmodels import render
from bench.realmodels.corpus import CALIBRATION, EVALUATION, CorpusModel, Runner, Score, fraction, rng
from bench.realmodels.feeds import Feed


class CtcRecognizer(CorpusModel):
    debian_packages = render.FONT_PACKAGE
    search_metric = "ctc_string_agreement"
    #: index 0 is the CTC blank
    charset: list[str]

    @abstractmethod
    def make_text(self, gen: np.random.Generator) -> str:
        """One random string of the kind the model reads."""

    @abstractmethod
    def feed(self, text: str, gen: np.random.Generator) -> Feed:
        """The rendered string, preprocessed as the package does."""

    @abstractmethod
    def class_scores(self, outputs: list[np.ndarray]) -> np.ndarray:
        """(time steps, classes) of the only batch item."""

    def _feeds(self, count: int, stream: int) -> list[Feed]:
        texts = render.texts(self.make_text, count, stream)
        return [self.feed(t, rng(stream, 1, i)) for i, t in enumerate(texts)]

    def evaluation_cases(self, count: int) -> list[Feed]:
        return self._feeds(count, EVALUATION)

    def calibration_feeds(self, count: int, fp32: Runner) -> list[Feed]:
        return self._feeds(count, CALIBRATION)

    def decode(self, outputs: list[np.ndarray]) -> str:
        """Greedy CTC: argmax per step, repeats merged, blanks dropped."""
        chars, previous = [], None
        for index in map(int, self.class_scores(outputs).argmax(axis=1)):
            if index != previous and index != 0 and index < len(self.charset):
                chars.append(self.charset[index])
            previous = index
        return "".join(chars)

    def score(self, reference: list[Any], got: list[Any]) -> Score:
        same = sum(a == b for a, b in zip(reference, got, strict=True))
        return fraction(same, len(reference), "strings identical")
