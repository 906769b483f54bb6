"""Voicemail recording and callback policy."""

from __future__ import annotations

from pydantic import Field

from config.base import Strict


class VoicemailConfig(Strict):
    max_length_s: int = Field(120, ge=5, le=600)
    end_silence_s: float = Field(5.0, ge=1)
    callback_max_attempts: int = Field(3, ge=1)
    callback_retry_minutes: int = Field(60, ge=1)
