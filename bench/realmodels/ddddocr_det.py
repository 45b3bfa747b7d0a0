"""ddddocr 1.6.1 `common_det.onnx`: YOLOX-style click-captcha character detector, 416x416.

Preprocessing (ddddocr/core/detection_engine.py, DetectionEngine.preproc): the image as OpenCV
decodes it (BGR, uint8) is resized by r = min(416/h, 416/w) and pasted top-left on a 416x416 canvas
of 114, CHW float32 0..255, no normalisation. Ours are rendered 416 wide and 240..416 high, so r = 1
(no resize) and the 114 padding is exercised. Decoding (demo_postprocess + get_bbox): grid offsets
and exp(wh) times the strides 8/16/32, boxes xyxy, scores = obj * cls, class-agnostic NMS at IoU
0.45 with score > 0.1, boxes clipped and truncated to int. Metric: images whose box set is fp32's
(as many boxes, each matched one-to-one at IoU >= 0.5: int8 moves a box by a pixel, pixel-exact
identity would count that as a miss), and box F1 at IoU >= 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.realmodels import ddddocr_common, metrics, render
from bench.realmodels.corpus import CALIBRATION, EVALUATION, CorpusModel, Runner, Score, fraction, rng
from bench.realmodels.feeds import Feed

SIZE = 416
STRIDES = (8, 16, 32)
#: Latin capitals and digits, and Greek/Cyrillic capitals DejaVu has (click captchas show big glyphs)
GLYPHS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789ΩΣΔΨΦЖЯДЛБ"


class CaptchaImage:
    """One rendered click captcha and its model feed."""

    def __init__(self, gen: np.random.Generator) -> None:
        self.height = int(gen.integers(240, SIZE + 1))
        image = render.noisy_background(gen, SIZE, self.height, 40, 240)
        for _ in range(int(gen.integers(3, 7))):
            glyph = GLYPHS[int(gen.integers(len(GLYPHS)))]
            size = int(gen.integers(34, 72))
            x, y = int(gen.integers(0, SIZE - size)), int(gen.integers(0, self.height - size))
            render.draw_fitting(
                image,
                glyph,
                (x, y, size, size),
                int(gen.integers(len(render.FONTS))),
                size,
                render.color(gen, 0, 256),
            )
        canvas = np.full((3, SIZE, SIZE), 114.0, np.float32)
        canvas[:, : self.height, :] = render.bgr_chw(image)
        self.feed: Feed = {"images": canvas[None]}


def _grids() -> tuple[np.ndarray, np.ndarray]:
    grids, strides = [], []
    for stride in STRIDES:
        n = SIZE // stride
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), stride))
    return np.concatenate(grids), np.concatenate(strides)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """ddddocr's numpy NMS (areas with the +1 pixel convention)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(overlap <= threshold)[0] + 1]
    return keep


class DdddocrDet(CorpusModel):
    name = "ddddocr_det"
    wheel = ddddocr_common.WHEEL
    onnx_member = "ddddocr/common_det.onnx"
    debian_packages = render.FONT_PACKAGE
    summary = (
        "click captchas rendered 416 x 240..416 (3-6 large glyphs on colour noise), letterboxed with "
        "114; YOLOX decode + NMS 0.45 / score 0.1; metric: same box sets (one-to-one at IoU >= 0.5), box F1"
    )

    def __init__(self) -> None:
        self.grids, self.strides = _grids()

    def _feeds(self, count: int, stream: int) -> list[Feed]:
        return [CaptchaImage(rng(stream, i)).feed for i in range(count)]

    def evaluation_cases(self, count: int) -> list[Feed]:
        return self._feeds(count, EVALUATION)

    def calibration_feeds(self, count: int, fp32: Runner) -> list[Feed]:
        return self._feeds(count, CALIBRATION)

    def decode(self, outputs: list[np.ndarray]) -> list[tuple[int, int, int, int]]:
        pred = np.array(outputs[0][0], np.float64)
        xy = (pred[:, :2] + self.grids) * self.strides
        wh = np.exp(pred[:, 2:4]) * self.strides
        scores = pred[:, 4:5] * pred[:, 5:]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        classes = scores.argmax(1)
        best = scores[np.arange(len(classes)), classes]
        valid = best > 0.1
        if not valid.any():
            return []
        kept = boxes[valid][nms(boxes[valid], best[valid], 0.45)]
        # ddddocr clips to the original image (here 416 wide; its height is the canvas it was pasted on)
        return sorted(
            (max(0, int(b[0])), max(0, int(b[1])), min(SIZE, int(b[2])), min(SIZE, int(b[3]))) for b in kept
        )

    def score(self, reference: list[Any], got: list[Any]) -> Score:
        same = sum(metrics.same_boxes(r, g) for r, g in zip(reference, got, strict=True))
        return fraction(same, len(reference), "same box sets", box_f1=metrics.box_f1(reference, got))
