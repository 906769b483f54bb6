"""The IVR over text: `say` becomes a message, `gather` a question with quick replies from the DTMF menu.

- `ScriptedIO`: answers come from a list given up front (`atiende simulate`, tests).
- `ChatConversation`: a live chat; each citizen message goes in with `reply(text)`, which returns
  the assistant's messages up to its next question (or the end). Digital channels use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ivr.contact import Ask, CallerGone, Heard, Recorded

InputKind = Literal["say", "dtmf"]


@dataclass
class OutMessage:
    text: str
    kind: Literal["message", "question"] = "message"
    options: list[tuple[str, str]] = field(default_factory=list)  # (key, label): quick replies

    def public(self) -> dict[str, Any]:
        return {"text": self.text, "kind": self.kind, "options": [{"key": k, "label": v} for k, v in self.options]}


def _heard(kind: InputKind, value: str) -> Heard:
    if kind == "dtmf":
        return Heard(kind="dtmf", digits=value)
    if not value.strip():
        return Heard(kind="no_input")
    return Heard(kind="speech", text=value, confidence=1.0, engine="text")


def heard_from_text(text: str, options: list[tuple[str, str]]) -> Heard:
    """A chat reply: a quick-reply key or label counts as the key; anything else as words."""
    t = text.strip()
    for key, label in options:
        if t == key or t.lower() == label.lower():
            return Heard(kind="dtmf", digits=key)
    return _heard("say", t)


class ScriptedIO:
    """Plays a scripted caller: each gather or record takes the next input; none left = silence, then hang-up."""

    def __init__(self, inputs: list[tuple[InputKind, str]], channel: str = "voice", caller: str = "+34600000000",
                 hang_up_after_silences: int = 6, clock: Any = None) -> None:
        self.inputs = list(inputs)
        self.clock = clock  # a FixedClock: waiting in a queue moves it on instead of taking real time
        self.channel = channel
        self.caller = caller
        self.out: list[OutMessage] = []
        self._ended = False
        self._silences = 0
        self._limit = hang_up_after_silences
        self.transferred_to: str | None = None

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def consumed_all(self) -> bool:
        return not self.inputs

    def _next(self) -> tuple[InputKind, str] | None:
        if self.inputs:
            return self.inputs.pop(0)
        self._silences += 1
        if self._silences > self._limit:
            self._ended = True
            raise CallerGone()
        return None

    async def say(self, text: str, *, cached: bool = False, barge_in: bool = True,
                  barge_in_ms: int | None = None) -> None:
        self.out.append(OutMessage(text))

    async def gather(self, ask: Ask) -> Heard:
        self.out.append(OutMessage(ask.text, "question", list(ask.options)))
        got = self._next()
        if got is None:
            return Heard(kind="no_input")
        kind, value = got
        if kind == "say" and self.channel != "voice":
            return heard_from_text(value, ask.options)
        if kind == "dtmf" and "dtmf" not in ask.input:
            return Heard(kind="no_input")
        if kind == "say" and "speech" not in ask.input:
            return Heard(kind="no_input")
        return _heard(kind, value)

    async def record(self, text: str, *, max_s: float, end_silence_s: float,
                     sink: Callable[[bytes], None] | None = None) -> Recorded:
        self.out.append(OutMessage(text, "question"))
        got = self._next()
        if got is None or got[0] != "say":
            return Recorded(text="", confidence=0.0)
        return Recorded(text=got[1], confidence=1.0)

    async def hold(self, seconds: float) -> bool:
        """Waiting takes no real time: the scripted clock moves on; without one the caller hangs up instead."""
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            self._ended = True
            return False
        advance(seconds)
        await asyncio.sleep(0)
        return True

    async def transfer(self, uri: str) -> bool:
        self.transferred_to = uri
        self._ended = True
        return True

    async def hangup(self) -> None:
        self._ended = True


class ChatConversation:
    """A running chat with the assistant. The engine runs in a task; `reply()` feeds one message."""

    def __init__(self, caller: str, channel: str = "chat") -> None:
        self.channel = channel
        self.caller = caller
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._outbox: asyncio.Queue[OutMessage | None] = asyncio.Queue()
        self._ended = False
        self._options: list[tuple[str, str]] = []

    @property
    def ended(self) -> bool:
        return self._ended

    async def _wait(self, ask_text: str, kind: Literal["question"], options: list[tuple[str, str]]) -> str | None:
        self._options = options
        await self._outbox.put(OutMessage(ask_text, kind, options))
        await self._outbox.put(None)  # the turn is over: reply() returns
        text = await self._inbox.get()
        if text is None:
            self._ended = True
            raise CallerGone()
        return text

    async def say(self, text: str, *, cached: bool = False, barge_in: bool = True,
                  barge_in_ms: int | None = None) -> None:
        await self._outbox.put(OutMessage(text))

    async def gather(self, ask: Ask) -> Heard:
        text = await self._wait(ask.text, "question", list(ask.options))
        return heard_from_text(text or "", ask.options)

    async def record(self, text: str, *, max_s: float, end_silence_s: float,
                     sink: Callable[[bytes], None] | None = None) -> Recorded:
        got = await self._wait(text, "question", [])
        return Recorded(text=got or "", confidence=1.0)

    async def hold(self, seconds: float) -> bool:
        return True

    async def transfer(self, uri: str) -> bool:
        return False

    async def hangup(self) -> None:
        self.finished()

    def finished(self) -> None:
        if not self._ended:
            self._ended = True
            self._outbox.put_nowait(None)

    async def _collect(self) -> list[OutMessage]:
        out: list[OutMessage] = []
        while True:
            msg = await self._outbox.get()
            if msg is None:
                return out
            out.append(msg)

    async def start(self) -> list[OutMessage]:
        """The assistant's first messages (welcome and first question)."""
        return await self._collect()

    async def reply(self, text: str) -> list[OutMessage]:
        if self._ended:
            return []
        await self._inbox.put(text)
        return await self._collect()

    async def close(self) -> None:
        await self._inbox.put(None)
