"""Where the IVR hands work to other areas: tickets (desk), queues (desk assignment), voicemail.

The engine only sees these small protocols. The composition root (`atiende.wiring`) fills them: tickets in
the desk, queued calls offered to agents (`ivr.distribution.AgentQueue`), durable voicemail with callbacks
(`voicemail.service.DurableVoicemail`). `DryRunHooks` serves `atiende simulate` without a store: nothing is
written, references are marked as simulated.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from core.errors import InvalidInput
from ivr.contact import ContactIO, Session

log = logging.getLogger(__name__)

WaitResult = Literal["connected", "overflow", "hangup", "handed_over"]


@dataclass
class QueuePlace:
    queue: str
    item_id: str
    position: int
    wait_s: float | None = None  # estimated wait (None: unknown)
    wait_certain: bool = True  # False: wait_s is a lower bound ("más de N minutos")


class TicketHook(Protocol):
    async def create(self, session: Session, *, queue: str, kind: str, subject: str, body: str,
                     due: datetime | None = None, data: dict[str, Any] | None = None) -> str: ...

    async def status_text(self, ref: str, spoken: bool = False) -> str | None:
        """Spanish status of a ticket, None when the reference does not exist."""
        ...

    async def latest_open(self, caller: str) -> str | None:
        """The newest ticket, not yet closed, of the citizen calling from this number (caller-ID shortcut)."""
        ...


class QueueHook(Protocol):
    async def enqueue(self, session: Session, queue: str) -> QueuePlace: ...

    async def wait(self, session: Session, io: ContactIO, place: QueuePlace, timeout_s: float) -> WaitResult:
        """Until an agent takes the contact ("connected"), the wait passes timeout ("overflow"), or the caller leaves."""
        ...

    async def leave(self, place: QueuePlace) -> None:
        """Out of the queue, whatever happened since `enqueue` (idempotent, never raises)."""
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


def _known(queues: Collection[str] | None, queue: str) -> None:
    """The desk's own hooks refuse a queue it does not have; a dry run must too, or it passes what a call fails."""
    if queues is not None and queue not in queues:
        raise InvalidInput(f"La cola «{queue}» no existe (colas: {', '.join(sorted(queues))})",
                           [{"loc": "queue", "reason": f"cola desconocida: {queue}"}], error_id="unknown-queue")


class DryRunHooks:
    """For `atiende simulate` without a store: nothing is written. Given the desk's queues, a step that hands
    over to any other one is refused (InvalidInput), as it would be on a real contact."""

    class _Tickets:
        def __init__(self, reader: TicketHook | None, queues: Collection[str] | None = None) -> None:
            self.reader = reader
            self.queues = queues

        async def create(self, session: Session, *, queue: str, kind: str, subject: str, body: str,
                         due: datetime | None = None, data: dict[str, Any] | None = None) -> str:
            _known(self.queues, queue)
            return "SIMULA"

        async def status_text(self, ref: str, spoken: bool = False) -> str | None:
            return await self.reader.status_text(ref, spoken) if self.reader is not None else None

        async def latest_open(self, caller: str) -> str | None:
            return await self.reader.latest_open(caller) if self.reader is not None else None

    class _Queue:
        def __init__(self, queues: Collection[str] | None = None) -> None:
            self.queues = queues

        async def enqueue(self, session: Session, queue: str) -> QueuePlace:
            _known(self.queues, queue)
            return QueuePlace(queue=queue, item_id=f"call:{session.call_id}", position=1)

        async def wait(self, session: Session, io: ContactIO, place: QueuePlace, timeout_s: float) -> WaitResult:
            return "handed_over"

        async def leave(self, place: QueuePlace) -> None:
            return None

    class _Voicemail:
        def __init__(self, queues: Collection[str] | None = None) -> None:
            self.queues = queues

        async def leave(self, session: Session, io: ContactIO, queue: str) -> str | None:
            _known(self.queues, queue)
            got = await io.record("Deje su mensaje después de la señal.", max_s=120, end_silence_s=5)
            return "SIMULA" if got.text else None

    @classmethod
    def make(cls, reader: TicketHook | None = None, queues: Collection[str] | None = None) -> Hooks:
        known = frozenset(queues) if queues is not None else None
        return Hooks(tickets=cls._Tickets(reader, known), queue=cls._Queue(known), voicemail=cls._Voicemail(known))
