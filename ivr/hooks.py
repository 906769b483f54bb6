"""Where the IVR hands work to other areas: tickets (desk), queues (desk assignment), voicemail.

The engine only sees these small protocols. `desk_hooks(runtime)` wires the real ones: tickets in the
desk, queued calls offered to agents (`ivr.distribution.AgentQueue`), durable voicemail with callbacks
(`voicemail.service.DurableVoicemail`). `DryRunHooks` serves
`atiende simulate` without a store: nothing is written, references are marked as simulated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ivr.contact import ContactIO, Session

if TYPE_CHECKING:
    from atiende.runtime import Runtime

log = logging.getLogger(__name__)

WaitResult = Literal["connected", "overflow", "hangup", "handed_over"]


@dataclass
class QueuePlace:
    queue: str
    item_id: str
    position: int
    wait_s: float | None = None


class TicketHook(Protocol):
    async def create(self, session: Session, *, queue: str, kind: str, subject: str, body: str,
                     due: datetime | None = None, data: dict[str, Any] | None = None) -> str: ...

    async def status_text(self, ref: str, spoken: bool = False) -> str | None:
        """Spanish status of a ticket, None when the reference does not exist."""
        ...


class QueueHook(Protocol):
    async def enqueue(self, session: Session, queue: str) -> QueuePlace: ...

    async def wait(self, session: Session, io: ContactIO, place: QueuePlace, timeout_s: float) -> WaitResult:
        """Until an agent takes the contact ("connected"), the wait passes timeout ("overflow"), or the caller leaves."""
        ...


class VoicemailHook(Protocol):
    async def leave(self, session: Session, io: ContactIO, queue: str) -> str | None:
        """Record a message and turn it into a ticket with a callback; returns its reference."""
        ...


@dataclass
class Hooks:
    tickets: TicketHook
    queue: QueueHook
    voicemail: VoicemailHook


# ---- the desk's tickets; queues are ivr.distribution.AgentQueue, voicemail is voicemail.service ----------------


class DeskTickets:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def create(self, session: Session, *, queue: str, kind: str, subject: str, body: str,
                     due: datetime | None = None, data: dict[str, Any] | None = None) -> str:
        desk: Any = self.rt.desk  # type: ignore[attr-defined,unused-ignore]
        citizen_id = None
        if session.caller:
            kind_of = "phone" if session.channel == "voice" else "webchat"
            citizen = await desk.citizens.identify(kind_of, session.caller)
            citizen_id = citizen.id
        ticket = await desk.tickets.create(channel="phone" if session.channel == "voice" else "webchat", queue=queue,
                                           subject=subject, kind=kind, citizen_id=citizen_id, intent=session.intent,
                                           trace_id=session.trace_id, body=body, due=due, actor="ivr")
        return str(ticket.ref)

    async def latest_open(self, caller: str) -> str | None:
        """The newest ticket, not yet closed, of the citizen calling from this number (caller-ID shortcut)."""
        from core.errors import InvalidInput

        desk: Any = self.rt.desk  # type: ignore[attr-defined,unused-ignore]
        try:
            citizen = await desk.citizens.find("phone", caller)
        except InvalidInput:
            return None
        if citizen is None:
            return None
        for ref in await desk.citizens.tickets(citizen.id, limit=10):
            ticket = await desk.tickets.find(ref)
            if ticket is not None and ticket.status not in ("closed", "resolved"):
                return str(ticket.ref)
        return None

    async def status_text(self, ref: str, spoken: bool = False) -> str | None:
        from core.errors import NotFound

        desk: Any = self.rt.desk  # type: ignore[attr-defined,unused-ignore]
        try:
            return str(await desk.tickets.status_text(ref, spoken=spoken))
        except NotFound:
            return None


def desk_hooks(runtime: Runtime) -> Hooks:
    """Tickets in the desk; queued calls offered to agents' phones; durable voicemail with callbacks."""
    from ivr.distribution import AgentQueue
    from voicemail.service import DurableVoicemail

    tickets = DeskTickets(runtime)
    return Hooks(tickets=tickets, queue=AgentQueue(runtime), voicemail=DurableVoicemail(runtime, tickets))


class DryRunHooks:
    """For `atiende simulate` without a store: nothing is written."""

    class _Tickets:
        def __init__(self, reader: TicketHook | None) -> None:
            self.reader = reader

        async def create(self, session: Session, *, queue: str, kind: str, subject: str, body: str,
                         due: datetime | None = None, data: dict[str, Any] | None = None) -> str:
            return "SIMULA"

        async def status_text(self, ref: str, spoken: bool = False) -> str | None:
            return await self.reader.status_text(ref, spoken) if self.reader is not None else None

    class _Queue:
        async def enqueue(self, session: Session, queue: str) -> QueuePlace:
            return QueuePlace(queue=queue, item_id=f"call:{session.call_id}", position=1)

        async def wait(self, session: Session, io: ContactIO, place: QueuePlace, timeout_s: float) -> WaitResult:
            return "handed_over"

    class _Voicemail:
        async def leave(self, session: Session, io: ContactIO, queue: str) -> str | None:
            got = await io.record("Deje su mensaje después de la señal.", max_s=120, end_silence_s=5)
            return "SIMULA" if got.text else None

    @classmethod
    def make(cls, reader: TicketHook | None = None) -> Hooks:
        return Hooks(tickets=cls._Tickets(reader), queue=cls._Queue(), voicemail=cls._Voicemail())
