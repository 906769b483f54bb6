"""What the IVR needs of the layers around it, as small protocols: a call leg, a way to place calls, speech,
and the desk's agents. telephony's `Call`/`SipEndpoint` and speech's `Speech` satisfy them structurally; the
composition root (atiende/wiring.py) adapts the desk. Tests pass fakes.

Audio crosses these seams as `core.audio.Frame`: 20 ms of 8 kHz 16-bit mono PCM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, Self

from core.audio import Frame
from speech.endpoint import BargeIn
from speech.service import ListenResult
from speech.stt import ClosedSet, SttResult


class CallLeg(Protocol):
    """One live call: audio in and out, keys, transfer, bridge, hang-up."""

    @property
    def call_id(self) -> str: ...

    @property
    def trace_id(self) -> str: ...

    @property
    def caller(self) -> str: ...

    @property
    def ended(self) -> asyncio.Event: ...

    async def answer(self) -> None: ...

    def audio(self) -> AsyncIterator[Frame]: ...

    def dtmf(self) -> AsyncIterator[str]: ...

    async def play(self, frames: AsyncIterable[Frame] | Iterable[Frame], *, interrupt_on_dtmf: bool = True) -> bool:
        """Play until the end; False when stopped (stop_playback, a key, hang-up)."""
        ...

    def stop_playback(self) -> None: ...

    async def transfer(self, uri: str, within_s: float = 30.0) -> bool: ...

    async def bridge(self, other: Self) -> None:
        """Audio and keys both ways until either side ends."""
        ...

    async def hangup(self, reason: str = "normal") -> None: ...


class Dialer(Protocol):
    """Places outbound calls (agents' phones, callbacks); raises telephony.errors.DialFailed."""

    async def dial(self, uri: str, *, from_user: str | None = None, ring_timeout: float = 30.0,
                   headers: dict[str, str] | None = None, trace_id: str | None = None) -> CallLeg: ...


class Speech(Protocol):
    """Recognise and synthesise, in the speech package's worker pools; the event loop only moves frames."""

    def BargeIn(self) -> BargeIn: ...

    async def listen(self, frames: AsyncIterator[Frame], *, hints: list[str] | None = None,
                     grammar: list[str] | None = None, no_input_ms: int | None = None,
                     end_silence_ms: int | None = None, max_ms: int | None = None,
                     on_partial: Callable[[str], None] | None = None,
                     accept: Callable[[str], bool] | None = None, closed: ClosedSet | None = None) -> ListenResult: ...

    async def transcribe(self, pcm8k: bytes, hints: list[str] | None = None) -> SttResult: ...

    def synth(self, text: str) -> AsyncIterator[Frame]: ...

    async def prompt(self, text: str) -> list[Frame]: ...


@dataclass(frozen=True)
class OfferedAgent:
    id: str
    sip_uri: str | None


class AgentDesk(Protocol):
    """The desk as the call distribution sees it: reserve an agent for a queued call, hold and release them
    (conditionally: `unhold`), tell the desk."""

    async def reserve(self, queue: str, *, item: str) -> OfferedAgent | None: ...

    async def set_away(self, agent_id: str) -> None: ...

    async def hold(self, agent_id: str, item: str) -> None:
        """Busy with `item` if the agent is available now (a supervisor on a call is offered no other)."""
        ...

    async def unhold(self, agent_id: str, item: str) -> None:
        """Available again if still busy with `item` (and only then)."""
        ...

    async def publish(self, event: dict[str, Any]) -> None: ...

    async def note_call(self, ref: str, *, call_id: str, agent: str, recordings: list[str]) -> None:
        """On the caller's ticket: an agent took the call (with its recordings), for the desk to link."""
        ...
