"""Canned replies per queue: an admin-editable list (versioned section `canned`, version 0 = `desk.canned`),
inserted by agents from the desk's reply box with the placeholders filled on the server:

    {nombre}            the citizen's name ("" -> "ciudadano/a")
    {referencia}        the ticket's reference as people read it (K7M-4PX)
    {proxima_apertura}  the queue calendar's next opening in Spanish ("el lunes 23 de noviembre a las 9:00")

Only these three names exist; filling is a plain substitution of `{name}` (never str.format, whose field syntax
reaches attributes), and what is substituted is data, not re-read as a template.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from config.desk import CannedReplies, CannedReply
from config.models import Settings
from core.clock import Clock
from core.errors import NotFound
from core.refs import display_ref
from core.store import Store
from core.versioned import VersionedSection, VersionInfo
from desk.audit import AuditLog
from desk.models import Citizen, Ticket
from desk.tickets import spanish_date

SECTION = "canned"
_FIELD = re.compile(r"\{(nombre|referencia|proxima_apertura)\}")
NextOpen = Callable[[str, datetime], Awaitable[datetime | None]]  # (queue, now) -> the next opening


def canned_section(store: Store, clock: Clock, settings: Callable[[], Settings]) -> VersionedSection[CannedReplies]:
    def check(doc: CannedReplies) -> None:
        queues = {q.id for q in settings().desk.queues}
        for r in doc.replies:
            unknown = sorted(set(r.queues) - queues)
            if unknown:
                raise ValueError(f"canned reply {r.id!r}: unknown queues {unknown} (queues: {sorted(queues)})")

    return VersionedSection(store, clock, SECTION, CannedReplies, lambda: settings().desk.canned, check)


def spanish_opening(at: datetime, tz: ZoneInfo) -> str:
    local = at.astimezone(tz)
    return f"{spanish_date(local, tz)} a las {local.hour}:{local.minute:02d}"


def fill(text: str, values: dict[str, str]) -> str:
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), text)


class CannedService:
    def __init__(self, section: VersionedSection[CannedReplies], clock: Clock, audit: AuditLog, tz: ZoneInfo,
                 next_open: NextOpen) -> None:
        self.section = section
        self.clock = clock
        self.audit = audit
        self.tz = tz
        self.next_open = next_open

    async def replies(self, queue: str | None = None) -> list[CannedReply]:
        doc = (await self.section.current())[1]
        return [r for r in doc.replies if queue is None or not r.queues or queue in r.queues]

    async def update(self, data: Any, actor: str, note: str = "") -> int:
        version = await self.section.put(data, actor, note)
        await self.audit.record(actor, "canned.update", SECTION, {"version": version, "note": note[:500]})
        return version

    async def rollback(self, version: int, actor: str) -> int:
        new = await self.section.rollback(version, actor)
        await self.audit.record(actor, "canned.rollback", SECTION, {"to": version, "version": new})
        return new

    async def versions(self) -> list[VersionInfo]:
        return await self.section.versions()

    async def render(self, reply_id: str, ticket: Ticket, citizen: Citizen | None) -> str:
        reply = next((r for r in await self.replies(ticket.queue) if r.id == reply_id), None)
        if reply is None:
            raise NotFound(f"no canned reply {reply_id[:40]!r} for queue {ticket.queue}", {"id": reply_id[:40]})
        values = {"nombre": (citizen.name if citizen and citizen.name else "ciudadano/a"),
                  "referencia": display_ref(ticket.ref)}
        if "{proxima_apertura}" in reply.text:
            try:
                nxt = await self.next_open(ticket.queue, self.clock.now())
            except Exception:  # no calendar: say something true rather than fail the agent's insert
                nxt = None
            values["proxima_apertura"] = spanish_opening(nxt, self.tz) if nxt else "el próximo día hábil"
        return fill(reply.text, values)
