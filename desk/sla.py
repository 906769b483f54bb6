"""SLA alerts: first response and resolution due in business time (the queue's calendar), warnings and breaches
to supervisors (desk events `sla.warning` / `sla.breach`) and to an outgoing signed webhook, and the list of
tickets at risk.

- First response: due `desk.sla.first_response_business_hours` of open time after creation, met by the first
  outbound reply (`Ticket.first_response_at`).
- Resolution: due at the ticket's `due` (complaints in business days, the rest in business hours: Desk.due).
- A warning when `warn_at` (80 %) of the business time between creation and the due instant is used, a breach
  when the due instant is past. Closed time (nights, weekends, holidays) does not count.

`run_once()` is what the periodic job does (atiende/components.py runs it on one node at a time, under a lease):
each alert goes out once per ticket, even across nodes and restarts (HSETNX on `Keys.sla_alerted`). `at_risk()`
computes the same states on demand for the API and the reports page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from config.desk import Sla
from config.models import Settings
from core.clock import Clock
from core.lease import Lease, LeaseLost
from core.refs import display_ref
from core.store import Store
from desk.events import EventBus
from desk.models import ACTIVE_STATUSES, Ticket
from desk.tickets import TicketService
from ivr.cdr import WebhookSender
from routing.calendar import Calendar, CalendarNeverOpens
from routing.calendar_service import CalendarService

log = logging.getLogger(__name__)
ALERTED_TTL_S = 400 * 86400
# KEYS[1] the ticket's alerted hash, KEYS[2] (optional) the job's lease; ARGV: field, time, ttl, lease value.
# 1: first time (alert), 0: alerted before, -1: the lease is not ours any more.
_NOTE_ALERT = """
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[4] then return -1 end
local first = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return first
"""
MAX_DAYS = 400  # business time is summed day by day; a due date further out is far from any alert

SlaKind = Literal["first_response", "resolution"]
Level = Literal["ok", "warning", "breach"]
LABELS = {"first_response": "primera respuesta", "resolution": "resolución"}


class SlaState(BaseModel):
    ref: str
    display_ref: str
    queue: str
    status: str
    assignee: str | None
    subject: str
    sla: SlaKind
    level: Level
    due: datetime
    warn_at: datetime
    used: float  # share of the business time used, 1.0 = due now


def business_seconds(cal: Calendar | None, start: datetime, end: datetime) -> float:
    """Open time between two instants in the calendar (wall-clock time without one)."""
    if end <= start:
        return 0.0
    if cal is None:
        return (end - start).total_seconds()
    total = 0.0
    day = start.astimezone(cal.tz).date()
    last = end.astimezone(cal.tz).date()
    for _ in range(MAX_DAYS):
        for s, e in cal.intervals_on(day):
            lo, hi = max(s, start), min(e, end)
            if hi > lo:
                total += (hi - lo).total_seconds()
        if day >= last:
            break
        day += timedelta(days=1)
    return total


def _add(cal: Calendar | None, at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds) if cal is None else cal.add_business_hours(at, seconds / 3600)


def assess(t: Ticket, cal: Calendar | None, cfg: Sla, now: datetime) -> list[SlaState]:
    """The SLA states of one ticket (nothing for a ticket that is not active)."""
    if t.status not in ACTIVE_STATUSES:
        return []
    out: list[SlaState] = []
    common = {"ref": t.ref, "display_ref": display_ref(t.ref), "queue": t.queue, "status": t.status,
              "assignee": t.assignee, "subject": t.subject}
    used_so_far = business_seconds(cal, t.created_at, now)
    if t.first_response_at is None:
        total = cfg.first_response_business_hours * 3600
        try:
            due, warn = _add(cal, t.created_at, total), _add(cal, t.created_at, total * cfg.warn_at)
        except (ValueError, CalendarNeverOpens):  # the calendar never opens again: no deadline to measure against
            pass
        else:
            level: Level = "breach" if now >= due else "warning" if now >= warn else "ok"
            out.append(SlaState(**common, sla="first_response", level=level, due=due, warn_at=warn,
                                used=round(used_so_far / total, 3)))
    if t.due is not None:
        total = business_seconds(cal, t.created_at, t.due)
        try:
            warn = _add(cal, t.created_at, total * cfg.warn_at) if total > 0 else t.due
        except (ValueError, CalendarNeverOpens):
            warn = t.due
        level = "breach" if now >= t.due else "warning" if now >= warn else "ok"
        used = used_so_far / total if total > 0 else (1.0 if now >= t.due else 0.0)
        out.append(SlaState(**common, sla="resolution", level=level, due=t.due, warn_at=warn, used=round(used, 3)))
    return out


class SlaService:
    def __init__(self, settings: Callable[[], Settings], store: Store, clock: Clock, tickets: TicketService,
                 events: EventBus, calendars: CalendarService | None, tz: ZoneInfo) -> None:
        self._settings = settings
        self.store = store
        self.clock = clock
        self.tickets = tickets
        self.events = events
        self.calendars = calendars
        self.tz = tz
        self.webhook = WebhookSender(lambda: settings().desk.sla.webhook, clock, "sla")

    async def _calendar(self, queue: str, cache: dict[str, Calendar | None]) -> Calendar | None:
        if queue in cache:
            return cache[queue]
        cal: Calendar | None = None
        if self.calendars is not None:
            q = self._settings().desk.queue(queue)
            try:
                cal = await self.calendars.get(q.calendar if q else None)
            except Exception as exc:  # the admin's version unreachable: the files' one, else wall-clock time
                try:
                    cal = self.calendars.get_offline(q.calendar if q else None)
                except Exception:
                    log.warning("no calendar for SLA of queue %s: %s", queue, exc)
        cache[queue] = cal
        return cal

    async def _active(self) -> list[Ticket]:
        limit = self._settings().desk.sla.max_scan
        out: list[Ticket] = []
        start = 0
        while start < limit:
            refs = [str(r) for r in await self.store.redis.zrange(self.store.keys.tickets_open, start,
                                                                   min(start + 500, limit) - 1)]
            if not refs:
                break
            start += len(refs)
            out.extend(await self.tickets.get_many(refs))
        return out

    async def _fetched(self) -> tuple[list[Ticket], dict[str, Calendar | None]]:
        tickets = await self._active()
        calendars: dict[str, Calendar | None] = {}
        for queue in sorted({t.queue for t in tickets}):
            await self._calendar(queue, calendars)
        return tickets, calendars

    async def states(self) -> list[SlaState]:
        """Every SLA clock of the active tickets. Fetched on the loop (Redis I/O), assessed in a worker thread:
        business time summed day by day over up to `max_scan` tickets is tens of milliseconds of CPU, and the
        loop also paces every call's RTP."""
        tickets, calendars = await self._fetched()
        return await asyncio.to_thread(states_of, tickets, calendars, self._settings().desk.sla, self.clock.now())

    async def risky(self) -> list[SlaState]:
        """Warnings and breaches, the nearest due first (breaches are past due, so they come first)."""
        tickets, calendars = await self._fetched()
        return await asyncio.to_thread(risky_of, tickets, calendars, self._settings().desk.sla, self.clock.now())

    async def at_risk(self, limit: int = 200) -> list[SlaState]:
        return (await self.risky())[:limit]

    async def run_once(self, lease: Lease | None = None) -> int:
        """One round of the job: emit each new warning or breach once. Returns how many went out. With the job's
        `lease`, each alert is noted only while the lease is still this holder's (checked in the same script):
        a holder paused past its lease (GC, a frozen VM) stops with LeaseLost instead of alerting on what it
        assessed before the pause."""
        if not self._settings().desk.sla.enabled:
            return 0
        sent = 0
        fence = [self.store.keys.lease(lease.name)] if lease is not None else []
        for s in await self.risky():
            first = await self.store.redis.eval(
                _NOTE_ALERT, 1 + len(fence), self.store.keys.sla_alerted(s.ref), *fence,
                f"{s.sla}:{s.level}", self.clock.now().isoformat(), ALERTED_TTL_S, lease.value if lease else "")
            if first == -1:
                raise LeaseLost(f"the sla lease is no longer {lease.value if lease else ''}")
            if not first:
                continue
            await self._emit(s)
            sent += 1
        return sent

    async def _emit(self, s: SlaState) -> None:
        kind = f"sla.{s.level}"
        what = "vencerá pronto" if s.level == "warning" else "ha vencido"
        await self.events.publish({
            "type": kind, "ref": s.ref, "queue": s.queue, "sla": s.sla, "level": s.level, "assignee": s.assignee,
            "due": s.due.isoformat(), "used": s.used,
            "text": f"Ticket {s.display_ref} (cola {s.queue}): el plazo de {LABELS[s.sla]} {what} "
                    f"({round(s.used * 100)} % del tiempo hábil usado)."})
        # No subject in the webhook: it may hold what the citizen said; the reference is enough to look it up.
        self.webhook.submit(kind, {"ref": s.display_ref, "queue": s.queue, "sla": s.sla, "level": s.level,
                                   "status": s.status, "assignee": s.assignee, "due": s.due.isoformat(),
                                   "used": s.used})

    async def close(self) -> None:
        await self.webhook.close()


def states_of(tickets: list[Ticket], calendars: dict[str, Calendar | None], cfg: Sla, now: datetime) -> list[SlaState]:
    """Pure computation over data already fetched (no I/O), for a worker thread. The calendars are only read
    (their day plans are cached in a dict, safe to fill from another thread)."""
    return [s for t in tickets for s in assess(t, calendars.get(t.queue), cfg, now)]


def risky_of(tickets: list[Ticket], calendars: dict[str, Calendar | None], cfg: Sla, now: datetime) -> list[SlaState]:
    risky = [s for s in states_of(tickets, calendars, cfg, now) if s.level != "ok"]
    risky.sort(key=lambda s: s.due)
    return risky
