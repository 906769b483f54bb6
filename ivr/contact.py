"""What the engine needs from a contact (a call or a chat) and what it remembers about one.

`ContactIO` is the whole surface between the flow engine and a channel: a call implements it
over telephony and speech (`ivr.callio`), a chat or `atiende simulate` over text (`ivr.textio`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from speech.stt import ClosedSet

Outcome = Literal["self_service", "queued", "transferred", "voicemail", "abandoned"]
HeardKind = Literal["speech", "dtmf", "no_input"]


class CallerGone(Exception):
    """The caller hung up (or the chat closed) while the engine was talking or listening."""


class Choice(BaseModel):
    """A closed answer the recogniser picked by comparing the audio with the expected phrases (`speech.stt.ClosedSet`)
    because the transcript had no words or one ("C," for a "sí"): shown to admins beside what was transcribed."""

    value: str
    margin: float = Field(description="how far it led the next answer or filler (nats of probability)")
    transcribed: str = Field("", description="what the open transcript said")


@dataclass
class Heard:
    kind: HeardKind
    text: str = ""
    confidence: float = 0.0
    digits: str = ""
    engine: str = ""
    chosen: Choice | None = None


@dataclass
class Ask:
    """One question: what to say, what input counts, and the keypad options (quick replies on chat)."""

    text: str
    input: list[str] = field(default_factory=lambda: ["speech", "dtmf"])
    options: list[tuple[str, str]] = field(default_factory=list)  # (key, label)
    num_digits: int | None = None
    finish_key: str = "#"
    timeout_s: float = 6.0
    max_s: float = 15.0
    barge_in: bool = True
    barge_in_ms: int | None = None  # caller speech that interrupts the question (None: the speech default)
    cached: bool = False  # a fixed prompt: calls may play a cached render
    hints: list[str] = field(default_factory=list)
    grammar: list[str] | None = None
    # Does a transcript answer the question? (speech asks its engine for a second opinion when not)
    accept: Callable[[str], bool] | None = None
    # The answers expected (sí/no): scored on the audio when the transcript is no answer and no words or one
    closed: ClosedSet | None = None


@dataclass
class Recorded:
    text: str
    confidence: float
    audio: bytes | None = None  # 8 kHz 16-bit mono PCM on calls
    duration_s: float = 0.0


class ContactIO(Protocol):
    channel: str  # "voice" | "chat"
    caller: str

    @property
    def ended(self) -> bool: ...

    async def say(self, text: str, *, cached: bool = False, barge_in: bool = True,
                  barge_in_ms: int | None = None) -> None: ...

    async def gather(self, ask: Ask) -> Heard: ...

    async def record(self, text: str, *, max_s: float, end_silence_s: float,
                     sink: Callable[[bytes], None] | None = None) -> Recorded:
        """Say `text`, beep, record until silence or max_s; calls give each 20 ms frame to `sink` as it arrives
        (voicemail writes it to disk at once, so a crash loses at most a second)."""
        ...

    async def hold(self, seconds: float) -> bool:
        """Keep the contact waiting (music or silence); False when the caller left."""
        ...

    async def transfer(self, uri: str) -> bool: ...

    async def hangup(self) -> None: ...


class PathEntry(BaseModel):
    flow: str
    index: int
    verb: str
    id: str | None = None
    at: datetime
    ms: int = 0
    detail: dict[str, Any] = Field(default_factory=dict)


class Transcript(BaseModel):
    at: datetime
    step: str
    kind: HeardKind | Literal["recording"]
    text: str = ""
    digits: str = ""
    confidence: float = 0.0
    engine: str = ""
    chosen: Choice | None = Field(None, description="the answer was chosen from the expected ones, not transcribed")


class Session(BaseModel):
    """Everything one contact went through; becomes its call record."""

    call_id: str
    trace_id: str
    channel: str = "voice"
    caller: str = ""
    started_at: datetime
    ended_at: datetime | None = None
    flows_version: int = 0
    calendar_state: str = ""
    intent: str | None = None
    confidence: float = 0.0
    entities: dict[str, Any] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict)
    path: list[PathEntry] = Field(default_factory=list)
    transcripts: list[Transcript] = Field(default_factory=list)
    answered: list[str] = Field(default_factory=list)  # self-service topics answered
    outcome: Outcome | None = None
    survey: int | None = Field(None, ge=1, le=5, description="the caller's 1-5 rating at the end, if asked and given")
    queue: str | None = None
    ticket_ref: str | None = None
    ended_by: str = ""
    said: list[str] = Field(default_factory=list)  # what the contact heard, in order (chat log, tests)
