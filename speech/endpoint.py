"""Endpointing on 20 ms frames of 8 kHz audio with webrtcvad: start and end of speech, no-input
timeout, maximum utterance length, and barge-in while a prompt plays.

webrtcvad decides per frame in microseconds, so this runs inline wherever frames arrive. A quiet
frame (below an energy floor) is never speech: line hiss and comfort noise stay silent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import webrtcvad

from core.audio import FRAME_BYTES, FRAME_MS, RATE
from speech.audio import rms

Event = Literal["speech", "end", "no_input", "max_length"]

MIN_RMS = 300  # ~ -40 dBFS: quieter frames count as silence whatever the VAD says
MAX_FLATNESS = 0.5  # spectral flatness: ~0.1-0.3 for voice, ~0.55+ for white noise, which webrtcvad calls speech


def flatness(frame: bytes) -> float:
    """Spectral flatness (geometric / arithmetic mean of the power spectrum) of one frame."""
    x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    p = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2 + 1e-3
    return float(np.exp(np.mean(np.log(p))) / np.mean(p))


def voiced(vad: webrtcvad.Vad, frame: bytes, min_rms: int) -> bool:
    return rms(frame) >= min_rms and vad.is_speech(frame, RATE) and flatness(frame) < MAX_FLATNESS


@dataclass
class Endpointer:
    """Feed frames; `feed` returns an event when something happens, else None.

    - "speech": speech started (`start_window` frames, `start_ratio` of them voiced);
    - "end": speech then `end_silence_ms` of silence;
    - "no_input": no speech within `no_input_ms`;
    - "max_length": speech went on for `max_ms`.
    After "end", "no_input" or "max_length" the endpointer is done; `utterance()` is the speech with a
    short pre-roll (the frames that triggered the start) so the first syllable is not cut.
    """

    aggressiveness: int = 2
    end_silence_ms: int = 600
    no_input_ms: int = 5000
    max_ms: int = 15000
    start_window: int = 10  # 200 ms
    start_ratio: float = 0.6
    preroll_frames: int = 15  # 300 ms kept before the detected start
    min_rms: int = MIN_RMS
    vad: webrtcvad.Vad = field(init=False, repr=False)
    frames_seen: int = field(init=False, default=0)
    in_speech: bool = field(init=False, default=False)
    done: Event | None = field(init=False, default=None)
    speech_frames: int = field(init=False, default=0)
    _window: deque[bool] = field(init=False, repr=False)
    _preroll: deque[bytes] = field(init=False, repr=False)
    _utt: list[bytes] = field(init=False, repr=False, default_factory=list)
    _silence_run: int = field(init=False, default=0)
    _last_voiced: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.vad = webrtcvad.Vad(self.aggressiveness)
        self._window = deque(maxlen=self.start_window)
        self._preroll = deque(maxlen=self.preroll_frames)

    def is_speech(self, frame: bytes) -> bool:
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"frames must be {FRAME_BYTES} bytes (20 ms of 8 kHz 16-bit mono), got {len(frame)}")
        return voiced(self.vad, frame, self.min_rms)

    @property
    def elapsed_ms(self) -> int:
        return self.frames_seen * FRAME_MS

    @property
    def speech_ms(self) -> int:
        return len(self._utt) * FRAME_MS

    @property
    def silence_ms(self) -> int:
        """Silence since the last voiced frame of the utterance (0 while the caller talks)."""
        return self._silence_run * FRAME_MS

    @property
    def utterance_frames(self) -> int:
        return len(self._utt)

    @property
    def speech_end_frames(self) -> int:
        """Frames of the utterance up to its last voiced one: an earlier decode covering as many heard it all."""
        return self._last_voiced

    def utterance(self) -> bytes:
        return b"".join(self._utt)

    def feed(self, frame: bytes) -> Event | None:
        if self.done is not None:
            return self.done
        self.frames_seen += 1
        is_voiced = self.is_speech(frame)
        if not self.in_speech:
            self._preroll.append(frame)
            self._window.append(is_voiced)
            if is_voiced and sum(self._window) >= self.start_ratio * self.start_window:
                self.in_speech = True
                self._utt = list(self._preroll)
                self._last_voiced = len(self._utt)
                self.speech_frames = sum(self._window)
                return "speech"
            if self.elapsed_ms >= self.no_input_ms:
                self.done = "no_input"
                return self.done
            return None
        self._utt.append(frame)
        if is_voiced:
            self.speech_frames += 1
            self._silence_run = 0
            self._last_voiced = len(self._utt)
        else:
            self._silence_run += 1
        if self._silence_run * FRAME_MS >= self.end_silence_ms:
            # Drop most of the trailing silence: engines are faster on shorter audio.
            keep = max(0, len(self._utt) - self._silence_run + 10)
            self._utt = self._utt[:keep]
            self.done = "end"
            return self.done
        if self.speech_ms >= self.max_ms:
            self.done = "max_length"
            return self.done
        return None

    def finish(self) -> Event:
        """The stream ended (hangup, end of file): what it amounts to."""
        if self.done is None:
            self.done = "end" if self.in_speech else "no_input"
        return self.done


class BargeIn:
    """True once the caller has been speaking for `min_speech_ms` while a prompt plays.

    A stricter VAD mode and a higher energy floor than the endpointer: echo of our own prompt and
    short noises (a cough, a click) should not cut the prompt. "Speaking for" means voiced frames
    making up most of a window a little longer than the minimum, so a word's short gaps count but
    a cough and a "¿hola?" (both under ~0.5 s) do not reach the default (speech.barge_in_ms). This is
    jambonz's minBargeinWordCount idea with duration for words: a word count would need a decode
    while the prompt plays, on every call.
    """

    def __init__(self, aggressiveness: int = 3, min_speech_ms: int = 200, min_rms: int = 2 * MIN_RMS) -> None:
        self.vad = webrtcvad.Vad(aggressiveness)
        self.min_rms = min_rms
        self.set_min_speech_ms(min_speech_ms)

    def set_min_speech_ms(self, ms: int) -> None:
        """A prompt's own minimum (the flows' `barge_in_ms`); starts over."""
        self.need = max(1, ms // FRAME_MS)
        self._window: deque[bool] = deque(maxlen=self.need + self.need // 2)
        self.triggered = False

    def voiced(self, frame: bytes) -> bool:
        """This detector's own call on one frame (no state)."""
        return len(frame) == FRAME_BYTES and voiced(self.vad, frame, self.min_rms)

    def feed(self, frame: bytes) -> bool:
        if self.triggered:
            return True
        if len(frame) != FRAME_BYTES:
            return False
        self._window.append(voiced(self.vad, frame, self.min_rms))
        self.triggered = sum(self._window) >= self.need
        return self.triggered

    def reset(self) -> None:
        self._window.clear()
        self.triggered = False
