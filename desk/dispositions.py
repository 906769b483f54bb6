"""Disposition (wrap-up) codes: an admin-editable list (versioned section `dispositions`, version 0 =
`desk.dispositions` in the files), set by an agent on a ticket or a call, optionally required to close a ticket.

On a ticket the code goes to `meta["disposition"]` with a note in its history, in the same transaction as its event
and audit entry (TicketService.change). On a call it goes to its own key (`Keys.call_disposition`), because the
IVR rewrites the whole call record at each step of a live call and would lose a field set beside it; the CDR and
the call record's API read both. Each ticket and call counts once in the report counters, under its code of the
day it was given it: a new code moves its count from the old code (and day) to the new one, the same code again
counts nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from redis.exceptions import WatchError

from config.desk import Disposition, Dispositions
from config.models import Settings
from core.clock import Clock
from core.errors import Conflict, InvalidInput
from core.refs import display_ref
from core.store import Store
from core.versioned import VersionedSection, VersionInfo
from desk.audit import AuditLog
from desk.models import Interaction, Ticket
from desk.tickets import COUNTER_TTL_S, TicketService

SECTION = "dispositions"
CLOSING = ("resolved", "closed")


def dispositions_section(store: Store, clock: Clock, settings: Callable[[], Settings]) -> VersionedSection[Dispositions]:
    def check(doc: Dispositions) -> None:
        queues = {q.id for q in settings().desk.queues}
        for c in doc.codes:
            unknown = sorted(set(c.queues) - queues)
            if unknown:
                raise ValueError(f"disposition {c.code!r}: unknown queues {unknown} (queues: {sorted(queues)})")

    return VersionedSection(store, clock, SECTION, Dispositions, lambda: settings().desk.dispositions, check)


# Moves one count: +1 on KEYS[1] (the new code's counter, kept ARGV[1] s), -1 on KEYS[2] if given (the old code's,
# never below 0: a counter already expired stays gone).
_MOVE = """
if #KEYS > 1 and tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


class DispositionService:
    def __init__(self, section: VersionedSection[Dispositions], store: Store, clock: Clock, tickets: TicketService,
                 audit: AuditLog, tz: ZoneInfo) -> None:
        self.section = section
        self.store = store
        self.clock = clock
        self.tickets = tickets
        self.audit = audit
        self.tz = tz

    async def current(self) -> Dispositions:
        return (await self.section.current())[1]

    async def codes(self, queue: str | None = None, *, active_only: bool = True) -> list[Disposition]:
        doc = await self.current()
        return [c for c in doc.codes if (c.active or not active_only) and (queue is None or not c.queues or queue in c.queues)]

    async def update(self, data: Any, actor: str, note: str = "") -> int:
        version = await self.section.put(data, actor, note)
        await self.audit.record(actor, "dispositions.update", SECTION, {"version": version, "note": note[:500]})
        return version

    async def rollback(self, version: int, actor: str) -> int:
        new = await self.section.rollback(version, actor)
        await self.audit.record(actor, "dispositions.rollback", SECTION, {"to": version, "version": new})
        return new

    async def versions(self) -> list[VersionInfo]:
        return await self.section.versions()

    async def resolve(self, code: str, queue: str | None) -> Disposition:
        """The active code `code` for `queue`, or a clear 422."""
        usable = await self.codes(queue)
        found = next((c for c in usable if c.code == code), None)
        if found is None:
            raise InvalidInput(f"La tipificación «{code[:40]}» no existe o no se usa en esta cola.",
                               {"code": code[:40], "queue": queue, "codes": [c.code for c in usable]},
                               error_id="unknown-disposition")
        return found

    def _counter(self, kind: str, code: str, day: str) -> str:
        return self.store.keys.counter(f"disposition:{kind}:{code}", day)

    def _today(self) -> str:
        return self.clock.now().astimezone(self.tz).date().isoformat()

    def _move_keys(self, kind: str, old: Any, new: dict[str, Any]) -> list[str]:
        """The counters `_MOVE` takes for a change from `old` (the stored value, if any) to `new`: the new code's of
        today, then the old code's of the day it was counted (none when unknown)."""
        keys = [self._counter(kind, str(new["code"]), self._today())]
        if isinstance(old, dict) and old.get("code"):
            try:
                day = datetime.fromisoformat(str(old.get("at"))).astimezone(self.tz).date().isoformat()
            except ValueError:
                return keys
            keys.append(self._counter(kind, str(old["code"]), day))
        return keys

    async def set_on_ticket(self, ref: str, code: str, *, actor: str) -> Ticket:
        t = await self.tickets.get(ref)
        d = await self.resolve(code, t.queue)
        value = {"code": d.code, "label": d.label, "by": actor, "at": self.clock.now().isoformat()}
        seen: dict[str, Any] = {}

        def mutate(ticket: Ticket) -> list[Interaction]:
            # Called once per attempt of the ticket's optimistic transaction: the last call saw what was replaced.
            old = ticket.meta.get("disposition")
            seen["old"] = old
            if not (isinstance(old, dict) and old.get("code") == d.code):
                ticket.meta["disposition"] = value  # the same code again keeps when it was given (and counted)
            return [Interaction(kind="note", channel="api", actor=actor, text=f"Tipificación: {d.label}",
                                data={"disposition": d.code})]

        out = await self.tickets.change(t.ref, mutate, actor=actor, action="ticket.disposition",
                                        details={"code": d.code})
        old = seen.get("old")
        if not (isinstance(old, dict) and old.get("code") == d.code):
            keys = self._move_keys("ticket", old, value)
            await self.store.redis.eval(_MOVE, len(keys), *keys, COUNTER_TTL_S)
        return out

    async def before_close(self, ref: str, status: str, code: str | None, *, actor: str) -> None:
        """Called by the close/status endpoints: sets `code` when given; refuses (422) closing or resolving a
        ticket that has none while dispositions are required."""
        if status not in CLOSING:
            return
        if code:
            await self.set_on_ticket(ref, code, actor=actor)
            return
        if not (await self.current()).required:
            return
        t = await self.tickets.get(ref)
        if not t.meta.get("disposition"):
            raise InvalidInput(f"Indique una tipificación antes de {'cerrar' if status == 'closed' else 'resolver'} "
                               f"el ticket {display_ref(t.ref)}.",
                               {"ref": t.ref, "codes": [c.code for c in await self.codes(t.queue)]},
                               error_id="disposition-required")

    async def set_on_call(self, call_id: str, code: str, queue: str | None, *, actor: str) -> dict[str, Any]:
        """Set (or change) a call's code; returns the value stored. The same code again keeps the first one."""
        d = await self.resolve(code, queue)
        value: dict[str, Any] = {"code": d.code, "label": d.label, "by": actor, "at": self.clock.now().isoformat()}
        k = self.store.keys
        key = k.call_disposition(call_id)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for _ in range(50):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    try:
                        old = json.loads(raw) if raw else None
                    except ValueError:
                        old = None
                    same = isinstance(old, dict) and old.get("code") == d.code
                    pipe.multi()
                    if not same:
                        pipe.set(key, json.dumps(value, ensure_ascii=False))
                        keys = self._move_keys("call", old, value)
                        pipe.eval(_MOVE, len(keys), *keys, COUNTER_TTL_S)
                    pipe.xadd(k.audit, self.audit.entry(actor, "call.disposition", call_id, {"code": d.code}),  # type: ignore[arg-type]
                              maxlen=self.audit.maxlen, approximate=True)
                    await pipe.execute()
                    return old if same and isinstance(old, dict) else value
                except WatchError:
                    continue
        raise Conflict("La tipificación de esta llamada cambió mientras se guardaba; vuelva a intentarlo.",
                       {"call_id": call_id}, error_id="disposition-busy")

    async def counts(self, start: date, end: date) -> dict[str, Any]:
        """Per code, tickets and calls given it between two local days (inclusive), with the labels."""
        if end < start or (end - start).days > 366:
            raise InvalidInput("the period must run forward and span at most 366 days", {"start": str(start), "end": str(end)})
        doc = await self.current()
        codes = [c.code for c in doc.codes]
        days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
        keys = [self.store.keys.counter(f"disposition:{kind}:{code}", day)
                for code in codes for kind in ("ticket", "call") for day in days]
        values = await self.store.redis.mget(keys) if keys else []
        out: dict[str, Any] = {}
        i = 0
        for c in doc.codes:
            counts = {"tickets": 0, "calls": 0}
            for kind in ("tickets", "calls"):
                for _ in days:
                    counts[kind] += int(values[i] or 0)
                    i += 1
            out[c.code] = {"label": c.label, "active": c.active, **counts}
        return {"start": start.isoformat(), "end": end.isoformat(), "codes": out}
