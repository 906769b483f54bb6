"""Speech-to-text and text-to-speech engines and endpointing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.base import Strict


class SpeechConfig(Strict):
    stt_engine: Literal["auto", "vosk", "whisper"] = "auto"
    tts_engine: Literal["auto", "piper", "espeak"] = "auto"
    vosk_model: str | None = None
    whisper_model: str | None = None
    piper_voice: str | None = None
    espeak_voice: str = "es"
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    end_silence_ms: int = Field(600, ge=100, le=5000)
    no_input_timeout_ms: int = Field(5000, ge=500)
    max_utterance_ms: int = Field(15000, ge=1000)
    stt_threads: int = Field(2, ge=1)
    tts_threads: int = Field(1, ge=1)
