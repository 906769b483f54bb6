"""Audio plumbing shared by the engines: WAV I/O, resampling (soxr), 20 ms framing, G.711 µ-law."""

from __future__ import annotations

import io
import warnings
import wave
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from core.errors import InvalidInput

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 (removed in 3.13, where audioop-lts provides it).
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from core.audio import FRAME_BYTES, RATE


class AudioError(InvalidInput):
    """Audio that cannot be used (bad WAV header, wrong format)."""

    error_id = "bad-audio"


def to_float(pcm: bytes | np.ndarray) -> np.ndarray:
    """16-bit PCM (bytes or int16 array) -> float32 in [-1, 1]."""
    a = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray | memoryview) else pcm
    if a.dtype == np.float32:
        return a
    return a.astype(np.float32) / 32768.0


def to_pcm16(audio: np.ndarray) -> bytes:
    """float32 [-1, 1] or int16 array -> 16-bit little-endian bytes."""
    if audio.dtype != np.int16:
        # x 32768 then clip: exact inverse of to_float, so PCM -> float -> PCM is lossless.
        audio = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    return audio.astype("<i2").tobytes()


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """float32 mono resampling with soxr (high quality, fast); a no-op at equal rates."""
    audio = to_float(audio)
    if rate_in == rate_out or audio.size == 0:
        return audio
    return np.asarray(soxr.resample(audio, rate_in, rate_out, quality="HQ"), dtype=np.float32)


def read_wav(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """A WAV file -> (float32 mono samples, rate). Any rate, 8/16/32-bit PCM, any channel count (mixed down).

    Raises AudioError with a readable reason for anything else (wrong header, compressed formats, empty file).
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        fh = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as exc:
        raise AudioError(f"{name}: cannot open: {exc.strerror}") from None
    try:
        with fh, wave.open(fh, "rb") as w:
            rate, width, channels, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, ValueError) as exc:
        raise AudioError(f"{name}: not a PCM WAV file ({exc})") from None
    if rate < 4000 or rate > 192000:
        raise AudioError(f"{name}: unsupported sample rate {rate} Hz")
    dtypes: dict[int, Any] = {1: np.uint8, 2: np.dtype("<i2"), 4: np.dtype("<i4")}
    if width not in dtypes:
        raise AudioError(f"{name}: unsupported sample width {width * 8} bits")
    usable = len(raw) - len(raw) % (width * channels)
    a = np.frombuffer(raw[:usable], dtype=dtypes[width]).astype(np.float32)
    if width == 1:
        a = (a - 128.0) / 128.0
    else:
        a /= float(2 ** (8 * width - 1))
    if channels > 1:
        a = a.reshape(-1, channels).mean(axis=1)
    return a.astype(np.float32), rate


def wav_bytes(audio: np.ndarray | bytes, rate: int = RATE) -> bytes:
    pcm = audio if isinstance(audio, bytes) else to_pcm16(audio)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def write_wav(path: str | Path, audio: np.ndarray | bytes, rate: int = RATE) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(wav_bytes(audio, rate))
    tmp.replace(p)  # atomic: readers never see a half-written file


def split_frames(pcm: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Cut PCM into whole frames; the last one is padded with silence."""
    out = [pcm[i:i + frame_bytes] for i in range(0, len(pcm), frame_bytes)]
    if out and len(out[-1]) < frame_bytes:
        out[-1] = out[-1] + b"\x00" * (frame_bytes - len(out[-1]))
    return out


class Framer:
    """Turns chunks of any length into exact 20 ms frames, keeping the remainder between chunks."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        self.frame_bytes = frame_bytes
        self._rest = b""

    def push(self, pcm: bytes) -> Iterator[bytes]:
        data = self._rest + pcm
        whole = len(data) - len(data) % self.frame_bytes
        self._rest = data[whole:]
        for i in range(0, whole, self.frame_bytes):
            yield data[i:i + self.frame_bytes]

    def flush(self) -> Iterator[bytes]:
        if self._rest:
            yield self._rest + b"\x00" * (self.frame_bytes - len(self._rest))
            self._rest = b""


def frames_of(chunks: Iterable[bytes]) -> Iterator[bytes]:
    framer = Framer()
    for c in chunks:
        yield from framer.push(c)
    yield from framer.flush()


def ulaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


def ulaw_decode(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, 2)


def ulaw_roundtrip(pcm: bytes) -> bytes:
    """What a G.711 µ-law phone line does to 16-bit audio."""
    return ulaw_decode(ulaw_encode(pcm))


def rms(pcm: bytes) -> int:
    return int(audioop.rms(pcm, 2)) if pcm else 0
