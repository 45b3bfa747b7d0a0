"""ddddocr 1.6.1 `common.onnx`: CNN + LSTM captcha text recognizer with a CTC head (8210 classes).

Preprocessing (ddddocr/core/ocr_engine.py, OCREngine._preprocess_image, default model): resize to
height 64 keeping the aspect ratio (LANCZOS), convert("L"), /255, shape (1, 1, 64, W). Our images are
rendered 64 high and 160 wide, so the resize is the identity and W is static. Decoding
(OCREngine._process_text_output + _ctc_decode_indices): the output is (T, 1, C), argmax over C,
drop repeats, drop index 0 (blank), map through the beta charset. Metric: identical strings.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from bench.realmodels import ddddocr_common, render
from bench.realmodels.ctc import CtcRecognizer
from bench.realmodels.feeds import Feed

WIDTH, HEIGHT = 160, 64


def captcha(text: str, gen: np.random.Generator) -> Image.Image:
    """A captcha-like line: colour field, each character in its own colour and offset, two noise arcs."""
    image = render.noisy_background(gen, WIDTH, HEIGHT, 170, 255)
    draw = ImageDraw.Draw(image)
    f = render.font(int(gen.integers(len(render.FONTS))), int(gen.integers(34, 42)))
    x = int(gen.integers(4, 14))
    for ch in text:
        left, top, right, bottom = draw.textbbox((0, 0), ch, font=f)
        y = int(gen.integers(0, max(1, HEIGHT - (bottom - top) - 4))) - top + 2
        draw.text((x - left, y), ch, font=f, fill=render.color(gen, 0, 120))
        x += right - left + int(gen.integers(1, 5))
    for _ in range(2):
        x0, y0 = int(gen.integers(0, WIDTH // 2)), int(gen.integers(0, HEIGHT))
        x1, y1 = int(gen.integers(WIDTH // 2, WIDTH)), int(gen.integers(0, HEIGHT))
        draw.line((x0, y0, x1, y1), fill=render.color(gen, 60, 200), width=1)
    return image


def preprocess(image: Image.Image) -> np.ndarray:
    return (np.asarray(image.convert("L"), np.float32) / 255.0)[None, None]


class DdddocrRec(CtcRecognizer):
    name = "ddddocr_rec"
    wheel = ddddocr_common.WHEEL
    onnx_member = "ddddocr/common.onnx"
    summary = (
        "captchas rendered 160x64 (4-6 alphanumerics, DejaVu fonts, colour noise, arcs); grey /255; "
        "CTC greedy decode with ddddocr's beta charset; metric: identical strings"
    )

    def __init__(self) -> None:
        self.charset = ddddocr_common.beta_charset()

    def make_text(self, gen: np.random.Generator) -> str:
        return render.random_word(gen, 4, 6)

    def feed(self, text: str, gen: np.random.Generator) -> Feed:
        return {"input1": preprocess(captcha(text, gen))}

    def class_scores(self, outputs: list[np.ndarray]) -> np.ndarray:
        return outputs[0][:, 0, :]  # (T, 1, C): ddddocr takes output[:, 0, :] when shape[1] == 1
