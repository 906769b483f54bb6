"""Voicemail recording and callback policy."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from config.base import Strict

NumberKind = Literal["premium", "shared_cost", "short", "personal", "corporate", "freephone", "mobile", "geographic",
                     "invalid"]


def _blocked_by_default() -> list[NumberKind]:
    return ["premium", "shared_cost", "short", "personal", "invalid"]


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
    callback_allow_international: bool = Field(
        False, description="call back numbers of other countries (a spoofed caller ID can name any)")
    callback_blocked: list[NumberKind] = Field(
        default_factory=_blocked_by_default,
        description="kinds of number never called back (core/phone.py)")
    storage: Literal["redis", "shared_dir", "local"] = Field(
        "redis", description="where finished recordings live so every node plays them (voicemail/storage.py)")
    shared_dir: Path | None = Field(None, description="with storage shared_dir: the directory every node mounts")
    audio_retention_days: int = Field(30, ge=1, le=3650, description="how long recordings are kept in the shared store")

    @model_validator(mode="after")
    def _shared_dir_given(self) -> VoicemailConfig:
        if self.storage == "shared_dir" and self.shared_dir is None:
            raise ValueError("voicemail.storage shared_dir needs voicemail.shared_dir")
        return self
