"""silero-vad 6.2.3 `silero_vad.onnx` (what load_silero_vad(onnx=True) loads: opset 16, an If on the
sample rate around the conv + LSTM network): voice activity, one speech probability per 32 ms chunk.

Streaming (silero_vad/utils_vad.py, OnnxWrapper.__call__ / audio_forward): 16 kHz audio in chunks of
512 samples, each prefixed by the previous chunk's last 64 samples (zeros at the start), the state
(2, 1, 128) float32 starting at zeros and carried from `stateN`, `sr` a scalar int64 16000; the last
chunk zero-padded. Decision (get_speech_timestamps): speech where the probability >= 0.5. Every
engine streams with its own state, as a user's would. Calibration: feeds (input, state, sr) taken from
fp32 streams of the calibration clips, in the per-sample layout (a scalar and a state batched on axis
1 have no batch-stacked form). Audio: espeak-ng sentences (several voices, speeds, pitches),
resampled 22050 -> 16000 Hz, between stretches of silence, noise, tones and hum. Metric: decision
agreement over all chunks.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from typing import Any, ClassVar

import numpy as np
from scipy.signal import resample_poly

from bench.realmodels import render
from bench.realmodels.corpus import CALIBRATION, EVALUATION, CaseResult, CorpusModel, Runner, Score, rng
from bench.realmodels.feeds import Feed
from bench.realmodels.wheels import Wheel

RATE, CHUNK, CONTEXT = 16000, 512, 64
THRESHOLD = 0.5
VOICES = ("en", "en-us", "en-gb-scotland", "en-029", "de", "fr", "es")


class AudioError(RuntimeError):
    """espeak-ng is missing (Debian: apt-get install espeak-ng)."""


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise AudioError("espeak-ng not found: apt-get install espeak-ng (it renders the speech)")
    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    data = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    with wave.open(io.BytesIO(data)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    g = np.gcd(RATE, rate)
    return resample_poly(pcm, RATE // g, rate // g).astype(np.float32)


def distractor(gen: np.random.Generator, seconds: float) -> np.ndarray:
    """Silence, white or brown noise, a tone chord or mains hum: what a VAD must call non-speech."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    kind = int(gen.integers(5))
    if kind == 0:
        x = np.zeros(n)
    elif kind == 1:
        x = gen.standard_normal(n)
    elif kind == 2:
        x = np.cumsum(gen.standard_normal(n))
        x = x - np.convolve(x, np.ones(400) / 400, mode="same")
    elif kind == 3:
        x = sum(np.sin(2 * np.pi * f * t) for f in gen.uniform(200, 2000, 3))
    else:
        x = np.sin(2 * np.pi * 50 * t) + 0.5 * np.sin(2 * np.pi * 150 * t)
    peak = np.max(np.abs(x)) or 1.0
    return (x / peak * gen.uniform(0.0, 0.3)).astype(np.float32)


def clip(gen: np.random.Generator) -> np.ndarray:
    """1-2 utterances between distractors, all over a faint noise floor (about 2-6 s)."""
    parts = [distractor(gen, gen.uniform(0.3, 1.0))]
    for _ in range(int(gen.integers(1, 3))):
        text = render.random_line(gen, int(gen.integers(15, 45)))
        voice = VOICES[int(gen.integers(len(VOICES)))]
        speech = speak(text, voice, int(gen.integers(120, 200)), int(gen.integers(25, 75)))
        parts += [speech * gen.uniform(0.3, 1.0), distractor(gen, gen.uniform(0.2, 0.8))]
    audio = np.concatenate(parts)
    return (audio + gen.uniform(0.0, 0.01) * gen.standard_normal(len(audio))).astype(np.float32)


def chunks(audio: np.ndarray) -> list[np.ndarray]:
    padded = np.pad(audio, (0, -len(audio) % CHUNK))
    return [padded[i : i + CHUNK][None] for i in range(0, len(padded), CHUNK)]


def stream(run: Runner, audio: np.ndarray, record: list[Feed] | None = None) -> np.ndarray:
    """OnnxWrapper's loop: context prefix, state carried; the speech probability of every chunk."""
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, CONTEXT), np.float32)
    sr = np.array(RATE, np.int64)
    probs = []
    for chunk in chunks(audio):
        feed = {"input": np.concatenate([context, chunk], axis=1), "state": state, "sr": sr}
        if record is not None:
            record.append(feed)
        out, state = run(feed)[:2]
        state = np.asarray(state, np.float32)
        context = feed["input"][:, -CONTEXT:]
        probs.append(float(np.asarray(out).reshape(-1)[0]))
    return np.array(probs, np.float32)


class SileroVad(CorpusModel):
    name = "silero_vad"
    wheel = Wheel("silero-vad", "6.2.3")
    onnx_member = "silero_vad/data/silero_vad.onnx"
    per_sample_calibration = True
    debian_packages: ClassVar[dict[str, str]] = {"espeak-ng": "espeak-ng"}
    summary = (
        "espeak-ng speech (7 voices) between silence/noise/tones/hum, 16 kHz; 512-sample chunks + 64 "
        "context, state carried per engine, sr=16000 scalar; metric: agreement of the speech decisions "
        "(p >= 0.5) per chunk"
    )

    def evaluation_cases(self, count: int) -> list[np.ndarray]:
        return [clip(rng(EVALUATION, i)) for i in range(count)]

    def calibration_feeds(self, count: int, fp32: Runner) -> list[Feed]:
        """`count` feeds spread evenly over the fp32 streams of count/8 calibration clips."""
        recorded: list[Feed] = []
        for i in range(max(1, -(-count // 8))):
            stream(fp32, clip(rng(CALIBRATION, i)), recorded)
        picks = np.linspace(0, len(recorded) - 1, count).round().astype(int)
        return [recorded[i] for i in picks]

    def run_case(self, run: Runner, case: np.ndarray) -> CaseResult:
        probs = stream(run, case)
        return CaseResult(probs >= THRESHOLD, probs)

    def decode(self, outputs: list[np.ndarray]) -> bool:
        return bool(np.asarray(outputs[0]).reshape(-1)[0] >= THRESHOLD)

    def score(self, reference: list[Any], got: list[Any]) -> Score:
        ref, out = np.concatenate(reference), np.concatenate(got)
        agree = int(np.count_nonzero(ref == out))
        return Score(
            "decision agreement",
            agree / len(ref),
            f"{agree / len(ref):.3f} of {len(ref)} chunks",
            {"fp32_speech_fraction": float(ref.mean())},
        )
