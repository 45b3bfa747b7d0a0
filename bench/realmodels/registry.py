"""The corpus: model name -> class, in the order the table lists them."""

from __future__ import annotations

from bench.realmodels.corpus import CorpusModel
from bench.realmodels.ddddocr_det import DdddocrDet
from bench.realmodels.ddddocr_rec import DdddocrRec
from bench.realmodels.magika import Magika
from bench.realmodels.ppocr_det import PpocrDet
from bench.realmodels.ppocr_rec import PpocrRec
from bench.realmodels.silero_vad import SileroVad

MODELS: dict[str, type[CorpusModel]] = {
    m.name: m for m in (DdddocrDet, DdddocrRec, PpocrRec, PpocrDet, Magika, SileroVad)
}
