"""Text to speech: piper (neural, production with a Spanish voice) and espeak-ng (Spanish fallback).

Engines yield float32 chunks at their native rate, one per sentence, so the first audio is ready
after the first sentence; `frames_8k` resamples them with one streaming soxr resampler (no clicks at
chunk edges) and cuts 20 ms frames of 8 kHz 16-bit PCM.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import soxr

from core.audio import RATE
from core.errors import InvalidInput, Unavailable
from speech.audio import Framer, read_wav, resample, to_pcm16

MAX_TEXT_CHARS = 5000  # a prompt, not a book: bounds the time a single synth call can take

_SENTENCE_END = re.compile(r"(?<=[.!?¿¡;:])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences, so long texts start playing after the first one is rendered."""
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip())]
    return [p for p in parts if p]


def _check_text(text: str) -> str:
    clean = " ".join(text.split())
    if len(clean) > MAX_TEXT_CHARS:
        raise InvalidInput(f"text too long for speech ({len(clean)} > {MAX_TEXT_CHARS} characters)")
    return clean


class TtsEngine(Protocol):
    name: str
    voice: str
    rate: int  # native sample rate of the chunks

    def chunks(self, text: str) -> Iterator[np.ndarray]: ...  # float32 mono at `rate`


class EspeakTts:
    """espeak-ng through its command line: one process per sentence (espeak-ng runs ~500x real time)."""

    name = "espeak"

    def __init__(self, voice: str = "es", speed: int = 160, pitch: int = 50, binary: str | None = None) -> None:
        exe = binary or shutil.which("espeak-ng")
        if exe is None:
            raise Unavailable("espeak-ng is not installed (Debian package espeak-ng)")
        self.exe = exe
        self.voice = voice
        self.speed = speed
        self.pitch = pitch
        self.rate = 22050

    def render(self, sentence: str, timeout: float = 30.0) -> np.ndarray:
        # The text goes through stdin, never argv: a prompt starting with "-" is not an option.
        cmd = [self.exe, "-v", self.voice, "-s", str(self.speed), "-p", str(self.pitch), "--stdout"]
        proc = subprocess.run(cmd, input=sentence.encode("utf-8"), capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not proc.stdout:
            raise Unavailable(f"espeak-ng failed (voice {self.voice!r}): {proc.stderr.decode(errors='replace').strip()}")
        audio, rate = read_wav(proc.stdout)
        self.rate = rate
        return audio

    def chunks(self, text: str) -> Iterator[np.ndarray]:
        for sentence in split_sentences(_check_text(text)):
            yield self.render(sentence)


class PiperTts:
    """A piper voice (ONNX); `espeak_voice` overrides the phonemiser language of the voice's config."""

    name = "piper"

    def __init__(self, model: str | Path, espeak_voice: str | None = None, length_scale: float | None = None) -> None:
        from piper import PiperVoice, SynthesisConfig

        path = Path(model)
        if not path.is_file() or not Path(f"{path}.json").is_file():
            raise Unavailable(f"piper voice not found: {path} (and its {path.name}.json)")
        self._voice = PiperVoice.load(path)
        if espeak_voice:
            self._voice.config.espeak_voice = espeak_voice
        self._syn = SynthesisConfig(length_scale=length_scale) if length_scale else None
        self.voice = f"{path.stem}:{self._voice.config.espeak_voice}"
        self.rate = int(self._voice.config.sample_rate)
        # The shared espeak phonemiser inside piper is global; one synthesis at a time per voice keeps
        # onnxruntime's own thread pool from oversubscribing two cores.
        self._lock = threading.Lock()

    def chunks(self, text: str) -> Iterator[np.ndarray]:
        clean = _check_text(text)
        if not clean:
            return
        with self._lock:
            for chunk in self._voice.synthesize(clean, syn_config=self._syn):
                yield np.asarray(chunk.audio_float_array, dtype=np.float32)


def frames_8k(engine: TtsEngine, text: str) -> Iterator[bytes]:
    """20 ms frames at 8 kHz, each sentence's frames yielded as soon as that sentence is rendered."""
    framer = Framer()
    stream: soxr.ResampleStream | None = None
    for chunk in engine.chunks(text):
        if stream is None:
            stream = soxr.ResampleStream(engine.rate, RATE, 1, dtype="float32", quality="HQ")
        yield from framer.push(to_pcm16(stream.resample_chunk(chunk)))
    if stream is not None:
        yield from framer.push(to_pcm16(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)))
    yield from framer.flush()


def render(engine: TtsEngine, text: str, rate: int = RATE) -> np.ndarray:
    """The whole text as float32 at `rate` (for files: `atiende say`)."""
    parts = list(engine.chunks(text))
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return resample(audio, engine.rate, rate)
