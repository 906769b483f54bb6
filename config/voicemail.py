"""Voicemail recording and callback policy."""

from __future__ import annotations

from pydantic import Field

from config.base import Strict


class VoicemailConfig(Strict):
    max_length_s: int = Field(120, ge=5, le=600, description="longest message kept")
    end_silence_s: float = Field(5.0, ge=1, description="this much silence after speech ends the message")
    no_input_s: float = Field(8.0, ge=1, description="no speech at all for this long: no message")
    queue: str = Field("N1", description="queue whose agents return the calls")
    callback_max_attempts: int = Field(3, ge=1)
    callback_retry_minutes: int = Field(60, ge=1, description="wait before retrying an unanswered callback (business time)")
    callback_overdue_minutes: int = Field(120, ge=1, description="a callback not done this long after it was due is flagged")
    auto_dial: bool = Field(False, description="the worker places due callbacks itself as outbound calls")
    worker_interval_s: float = Field(5.0, gt=0)
    dial_ring_timeout_s: float = Field(30.0, gt=0)
