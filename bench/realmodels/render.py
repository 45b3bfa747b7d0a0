"""Text rendered with PIL in the fonts every machine of the project has (Debian's fonts-dejavu-core).

The OCR models get images drawn here: the rendered string is known, so the inputs are real text in
the size each model's own preprocessing produces, without any resize that would need OpenCV.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Collection
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bench.realmodels.corpus import CALIBRATION, EVALUATION, MAX_CASES, rng

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
#: what a model rendering text with these fonts declares (CorpusModel.debian_packages)
FONT_PACKAGE = {"fonts-dejavu-core": str(FONT_DIR / "DejaVuSans.ttf")}
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
)
ALNUM = string.ascii_letters + string.digits
_VOCABULARY = (
    "invoice total amount order number date customer account payment balance due street city model "
    "quantized integer float report kernel tensor layer weight scale input output batch north river "
    "garden window station market coffee paper yellow orange silver minute second hello world "
    "summer winter quick brown lazy jumps over table chair number phone email "
)
WORDS = tuple(_VOCABULARY.split())


class FontError(RuntimeError):
    """The DejaVu fonts are missing (Debian: apt-get install fonts-dejavu-core)."""


@cache
def font(index: int, size: int) -> ImageFont.FreeTypeFont:
    path = FONT_DIR / FONTS[index % len(FONTS)]
    if not path.exists():
        raise FontError(f"font {path} missing: apt-get install fonts-dejavu-core")
    return ImageFont.truetype(str(path), size)


def random_word(rng: np.random.Generator, lo: int, hi: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(list(alphabet), int(rng.integers(lo, hi + 1))))


def random_line(rng: np.random.Generator, max_chars: int) -> str:
    """A short line of dictionary words and numbers, like a line of a receipt."""
    parts: list[str] = []
    while True:
        kind = rng.integers(4)
        part = (
            str(int(rng.integers(1, 10000)))
            if kind == 0
            else str(WORDS[int(rng.integers(len(WORDS)))]).capitalize()
            if kind == 1
            else str(WORDS[int(rng.integers(len(WORDS)))])
        )
        if parts and len(" ".join([*parts, part])) > max_chars:
            return " ".join(parts)
        parts.append(part)


def distinct(make: Callable[[], str], count: int, exclude: Collection[str] = ()) -> list[str]:
    """`count` different strings from `make()` none of which is in `exclude`."""
    out: list[str] = []
    while len(out) < count:
        text = make()
        if text and text not in exclude and text not in out:
            out.append(text)
    return out


def color(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(lo, hi, 3))
    return r, g, b


def noisy_background(rng: np.random.Generator, width: int, height: int, lo: int, hi: int) -> Image.Image:
    """A smooth random colour field (upsampled coarse noise), as on captchas and photos of paper."""
    coarse = rng.integers(lo, hi, (max(2, height // 16), max(2, width // 16), 3)).astype(np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BICUBIC)


def draw_fitting(
    image: Image.Image, text: str, box: tuple[int, int, int, int], font_index: int, size: int, fill
) -> ImageDraw.ImageDraw:
    """Draw `text` at the largest size <= `size` whose bounding box fits into `box` (x, y, w, h)."""
    draw = ImageDraw.Draw(image)
    x, y, w, h = box
    while size > 8:
        f = font(font_index, size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=f)
        if right - left <= w and bottom - top <= h:
            draw.text((x - left, y - top + (h - (bottom - top)) // 2), text, font=f, fill=fill)
            return draw
        size -= 1
    raise ValueError(f"{text!r} does not fit into {box}")


def bgr_chw(image: Image.Image) -> np.ndarray:
    """HWC RGB uint8 -> CHW BGR float32 (OpenCV's channel order, which these packages read with)."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1].transpose(2, 0, 1), np.float32)


def texts(make: Callable[[np.random.Generator], str], count: int, stream: int) -> list[str]:
    """`count` distinct strings of one stream. Calibration strings never equal any of the first
    MAX_CASES evaluation strings, so calibration and evaluation inputs stay disjoint for any --samples
    (the evaluation stream is prefix-stable: its first n strings do not depend on the count asked)."""
    evaluation = rng(EVALUATION, 0)
    if stream == EVALUATION:
        return distinct(lambda: make(evaluation), count)
    held = set(distinct(lambda: make(evaluation), MAX_CASES))
    calibration = rng(CALIBRATION, 0)
    return distinct(lambda: make(calibration), count, held)
