"""The desk's services: one shared model for every channel, used by the REST API, the IVR and the channels.

`runtime.desk` is a `Desk`:

    desk.citizens   CitizenService   identify / find / link / merge / get / recent / tickets   (citizens.py)
    desk.tickets    TicketService    create / get / find / query / interactions / add_interaction / claim /
                                     assign / escalate / reply / note / set_status / close / status_text /
                                     status_view / bind_thread / by_thread / trace (tickets.py)
    desk.agents     AgentService     upsert / get / find / all / set_presence / idle   (agents.py)
    desk.assign     Assignment       reserve / release / offer / claim_next   (assignment.py)
    desk.events     EventBus         publish / read / recent                  (events.py)
    desk.audit      AuditLog         record / entries                         (audit.py)
    desk.auth       AuthService      create_user / login / authenticate / create_api_key   (auth.py)
    desk.limiter    RateLimiter      check(name, client)                      (auth.py)
    desk.reports    Reports          record_contact / record_wait / summary   (reports.py)
    desk.privacy    PrivacyService   export / erase / anonymise_ticket        (privacy.py)
    desk.retention  RetentionService run_once / run_if_due                    (retention.py)

Models are in models.py (Citizen, Ticket, Interaction, Agent, Principal). Replies to digital channels go through
senders registered in outbound.py.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from desk.agents import AgentService
from desk.assignment import Assignment
from desk.audit import AuditLog
from desk.auth import AuthService, RateLimiter
from desk.citizens import CitizenService
from desk.events import EventBus
from desk.models import Interaction, Principal, Ticket
from desk.privacy import PrivacyService
from desk.reports import Reports
from desk.retention import RetentionService
from desk.tickets import TicketService, business_days_fallback

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from config.models import Settings
    from core.clock import Clock
    from core.store import Store
    from desk.outbound import Sender
    from routing.calendar import Calendar
    from routing.calendar_service import CalendarService

log = logging.getLogger(__name__)


class Desk:
    def __init__(self, settings: Callable[[], Settings], store: Store, clock: Clock,
                 calendars: CalendarService | None = None) -> None:
        """`settings` reads the configuration as it is now; `calendars` gives due dates in business time (without
        it, due dates count weekdays)."""
        self._settings = settings
        self.calendars = calendars
        self.senders: dict[str, Sender] = {}
        s = settings()
        cfg = s.desk
        cal_cfg = s.calendar
        self.tz = ZoneInfo(cal_cfg.calendars[cal_cfg.default].timezone) if cal_cfg.default in cal_cfg.calendars \
            else ZoneInfo("Europe/Madrid")
        self.cfg = cfg
        self.events = EventBus(store, clock, cfg.events_maxlen)
        self.audit = AuditLog(store, clock, cfg.audit_maxlen)
        self.citizens = CitizenService(store, clock, self.events, self.audit)
        self.tickets = TicketService(store, clock, cfg, self.events, self.audit, self.tz, self.due, self.deliver)
        self.agents = AgentService(store, clock, self.events, self.audit)
        self.assign = Assignment(store, cfg, self.agents, self.tickets, self.events)
        self.auth = AuthService(store, clock, cfg, self.agents, self.audit)
        self.limiter = RateLimiter(store, clock, cfg)
        self.reports = Reports(store, clock, self.tz, self.tickets)
        self.privacy = PrivacyService(store, clock, self.citizens, self.tickets, self.audit,
                                      lambda: settings().service.data_dir, shared_dir=lambda: _shared_dir(settings()))
        self.retention = RetentionService(store, clock, lambda: settings().desk.retention, self.privacy, self.citizens,
                                          self.tickets, self.audit, lambda: settings().service.data_dir)
        self._due_cache: dict[tuple[str, str], tuple[datetime, datetime | None]] = {}

    async def queues_visible_to(self, p: Principal) -> frozenset[str] | None:
        """The queues whose tickets, citizens, calls and events `p` may see; None: all (supervisors, admins,
        supervisor machines). An agent sees the queues of their agent record, or without one those of their level.
        The one rule for the desk's lists, the live stream and the call records."""
        if p.has("supervisor"):
            return None
        agent = await self.agents.find(p.agent_id) if p.agent_id else None
        if agent is not None:
            return frozenset(self.assign.queues_for(agent))
        level = 2 if "agent_n2" in p.roles else 1
        return frozenset(q.id for q in self.cfg.queues if q.level <= level)

    def register_sender(self, channel: str, sender: Sender) -> None:
        self.senders[channel] = sender

    async def deliver(self, ticket: Ticket, message: Interaction) -> dict[str, Any] | None:
        """Send a reply through the channel's registered sender; None when the channel has none (phone, office)."""
        sender = self.senders.get(ticket.channel)
        if sender is None:
            return None
        return (await sender(ticket, message)) or {}

    async def due(self, kind: str, queue: str, now: datetime) -> datetime | None:
        """Due date from the queue's calendar: complaints/suggestions within N business days, the rest within
        N business hours; voicemails and callbacks are due at the next opening.

        Computed from `now` truncated to the second and remembered for that second: under load every creation
        in the same second shares one calendar computation (a due date to the second is precise enough)."""
        second = now.replace(microsecond=0)
        key = (kind, queue)
        hit = self._due_cache.get(key)
        if hit is not None and hit[0] == second:
            return hit[1]
        value = await self._due(kind, queue, second)
        self._due_cache[key] = (second, value)
        return value

    async def _due(self, kind: str, queue: str, now: datetime) -> datetime | None:
        cfg = self._settings().desk
        q = cfg.queue(queue)
        cal: Calendar | None = None
        calendars = self.calendars
        if calendars is not None:
            name = q.calendar if q else None
            try:
                cal = await calendars.get(name)
            except Exception as exc:  # the admin's version is unreachable: the files' version, then weekdays
                try:
                    cal = calendars.get_offline(name)
                except Exception:
                    log.warning("calendar unavailable for due dates: %s", exc)
        if cal is None:
            days = cfg.complaint_due_business_days if kind in ("complaint", "suggestion") else \
                max(1, cfg.ticket_due_business_hours // 8)
            return business_days_fallback(now, days)
        if kind in ("complaint", "suggestion"):
            return cal.add_business_days(now, cfg.complaint_due_business_days)
        if kind in ("voicemail", "callback"):
            return cal.next_open(now + timedelta(seconds=1))
        return cal.add_business_hours(now, cfg.ticket_due_business_hours)


def _shared_dir(settings: Settings) -> Path | None:
    """Where every node's recordings are copied, when they are (erasure and retention delete them there too)."""
    vm = settings.voicemail
    return vm.shared_dir if vm.storage == "shared_dir" else None
