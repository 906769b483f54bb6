"""Tickets: create, read, list, interactions, status changes, claims and the citizen-facing status text.

    t = await desk.tickets.create(channel="phone", queue="N1", subject="Consulta ITV", kind="query",
                                  citizen_id=c.id, intent="tasa_itv", trace_id=call.trace_id, body="...",
                                  due=None, actor="ivr", meta={...})        # due None = from the calendar
    t = await desk.tickets.get("K7M-4PX")                                    # any spelling; NotFound if unknown
    ts = await desk.tickets.query(queue="N1", status=None, assignee=None, waiting=True, limit=50)  # newest first
    await desk.tickets.add_interaction(t.ref, Interaction(kind="voicemail", channel="phone", actor="ivr",
                                                          text=transcript, data={"recording": url}))
    t = await desk.tickets.claim(t.ref, agent_id)          # atomic: exactly one claimer wins, others get Conflict
    t = await desk.tickets.escalate(t.ref, actor="user:ana", note="...")     # N1 -> N2 queue, with a note
    t = await desk.tickets.set_status(t.ref, "resolved", actor=..., note=...)   # or resolve()/close()/reopen()
    text = await desk.tickets.status_text("K7M4PX", spoken=False)           # Spanish; NotFound if unknown
    await desk.tickets.bind_thread("email", message_id, t.ref); await desk.tickets.by_thread("email", message_id)

Storage: the ticket is one JSON value; each change is an optimistic transaction (WATCH/MULTI) that also updates
the indexes, appends the interaction, the desk event and the audit entry, so they never disagree. Creation is one
Lua script (unique reference via SET NX, indexes, first interaction, event, audit, counters) = one round trip, one
fsync with `appendfsync always`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from config.desk import DeskConfig
from core.clock import Clock
from core.errors import Conflict, InvalidInput, NotFound, Unavailable
from core.refs import display_ref, new_ref, normalize_ref, spoken_ref
from core.store import Store
from desk.audit import AuditLog
from desk.events import EventBus, encode
from desk.models import ACTIVE_STATUSES, TRANSITIONS, Interaction, Ticket, normalize_channel

DueFn = Callable[[str, str, datetime], Awaitable[datetime | None]]  # (kind, queue, now) -> due
DeliverFn = Callable[[Ticket, Interaction], Awaitable[dict[str, Any] | None]]  # raises when not delivered, or None: no sender


class Delivery(BaseModel):
    channel: str
    sent: bool
    result: dict[str, Any] | None = None
    error: str | None = None


class Reply(BaseModel):
    interaction: Interaction
    delivery: Delivery
COUNTER_TTL_S = 400 * 86400

_CREATE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') == false then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[2], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[7], ARGV[5])
  redis.call('INCR', KEYS[13]); redis.call('EXPIRE', KEYS[13], ARGV[17])
end
redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[12], '*', 'type', ARGV[6], 'data', ARGV[7])
redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[13], '*', 'at', ARGV[8], 'actor', ARGV[9], 'action', 'ticket.create',
           'target', ARGV[4], 'details', ARGV[11])
if ARGV[14] == '1' then redis.call('ZADD', KEYS[10], ARGV[2], ARGV[4]) end
if ARGV[15] == '1' then redis.call('RPUSH', KEYS[11], ARGV[16]) end
redis.call('INCR', KEYS[12]); redis.call('EXPIRE', KEYS[12], ARGV[17])
if ARGV[18] ~= '' and redis.call('GET', KEYS[14]) == ARGV[18] then
  redis.call('SET', KEYS[14], ARGV[4], 'EX', tonumber(ARGV[19]))
end
return 1
"""

_KIND_WORDS: dict[str, tuple[str, bool]] = {  # noun, feminine
    "query": ("consulta", True),
    "complaint": ("queja", True),
    "suggestion": ("sugerencia", True),
    "voicemail": ("mensaje de voz", False),
    "callback": ("solicitud de llamada", True),
}
_WEEKDAYS = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
_MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
           "noviembre", "diciembre")
STATUS_LABELS = {
    "open": "pendiente de atender",
    "assigned": "en trámite",
    "escalated": "trasladada a un especialista",
    "resolved": "resuelta",
    "closed": "cerrada",
}


def spanish_date(at: datetime, tz: ZoneInfo) -> str:
    local = at.astimezone(tz)
    return f"el {_WEEKDAYS[local.weekday()]} {local.day} de {_MONTHS[local.month - 1]}"


def _waiting(t: Ticket) -> bool:
    return t.status in ("open", "escalated") and t.assignee is None


class TicketService:
    def __init__(self, store: Store, clock: Clock, cfg: DeskConfig, events: EventBus, audit: AuditLog, tz: ZoneInfo,
                 due_fn: DueFn | None = None, deliver: DeliverFn | None = None) -> None:
        self.store = store
        self.clock = clock
        self.cfg = cfg
        self.events = events
        self.audit = audit
        self.tz = tz
        self.due_fn = due_fn
        self.deliver = deliver
        self._create = store.redis.register_script(_CREATE)

    # ---- helpers -----------------------------------------------------------------------------

    def day(self, at: datetime | None = None) -> str:
        return (at or self.clock.now()).astimezone(self.tz).date().isoformat()

    def _ref(self, ref: str) -> str:
        r = normalize_ref(ref)
        if r is None:
            raise NotFound(f"no ticket with reference {ref!r}", {"ref": ref})
        return r

    def _queue(self, queue: str | None, kind: str) -> tuple[str, int]:
        if queue is None:
            queue = self.cfg.complaints_queue if kind in ("complaint", "suggestion") else self.cfg.default_queue
        q = self.cfg.queue(queue)
        if q is None:
            raise InvalidInput(f"unknown queue {queue!r}", {"queue": queue, "queues": [x.id for x in self.cfg.queues]})
        return q.id, q.level

    # ---- create / read -----------------------------------------------------------------------

    async def create(self, *, channel: str, queue: str | None, subject: str, kind: str = "query",
                     citizen_id: str | None = None, intent: str | None = None, trace_id: str | None = None,
                     body: str = "", due: datetime | None = None, actor: str = "ivr",
                     meta: dict[str, Any] | None = None, first: Interaction | None = None,
                     marker: tuple[str, str, int] | None = None) -> Ticket:
        """A new ticket in `queue` (None = default queue for the kind). `first` is stored as its first interaction;
        by default the body becomes one (kind by channel) when it is not empty.

        `marker` = (key, token, ttl_s): in the same atomic step as the ticket, the key is set to the new reference
        (for ttl_s) if it still holds `token`, so a request's record of what it created (an Idempotency-Key) is
        never on one side of a failover while the ticket is on the other."""
        channel = normalize_channel(channel)
        queue_id, level = self._queue(queue, kind)
        now = self.clock.now()
        if due is None and self.due_fn is not None:
            due = await self.due_fn(kind, queue_id, now)
        if due is not None and due.tzinfo is None:
            raise InvalidInput("due must carry a UTC offset", {"due": str(due)})
        try:
            ticket = Ticket(ref="222222", kind=kind, channel=channel, queue=queue_id, level=level,
                            subject=subject.strip()[:300] or "(sin asunto)", body=body[:20000], citizen_id=citizen_id,
                            intent=intent, trace_id=trace_id, created_at=now, updated_at=now, due=due, created_by=actor,
                            meta=meta or {})
        except ValueError as exc:
            raise InvalidInput(f"invalid ticket: {exc}") from None
        if first is None and body.strip():
            first = Interaction(kind=_message_kind(channel), channel=channel, actor=actor if actor != "ivr" else "citizen",
                                direction="in", text=body[:20000])
        if first is not None and first.at is None:
            first.at = now
        k = self.store.keys
        for _ in range(10):  # a clash in 2^30 references is rare; retry with a new one
            ticket.ref = new_ref()
            event = {"type": "ticket.created", "ref": ticket.ref, "queue": queue_id, "status": "open", "kind": kind,
                     "channel": channel, "subject": ticket.subject, "at": now.isoformat(), "actor": actor}
            trace = json.dumps({"kind": "ticket", "id": ticket.ref, "at": now.isoformat()})
            ok = await self._create(
                keys=[k.ticket(ticket.ref), k.tickets_all, k.tickets_open, k.tickets_status("open"), k.tickets_queue(queue_id),
                      k.queue_items(queue_id), k.ticket_interactions(ticket.ref), k.events, k.audit,
                      k.citizen_tickets(citizen_id or "-"), k.trace(trace_id or "-"), k.counter("tickets", self.day(now)),
                      k.counter(f"interactions:{channel}", self.day(now)), marker[0] if marker else k.ticket(ticket.ref)],
                args=[ticket.model_dump_json(), now.timestamp(), due.timestamp() if due else "+inf", ticket.ref,
                      first.model_dump_json() if first else "", "ticket.created", json.dumps(event, ensure_ascii=False),
                      now.isoformat(), actor, "ticket.create",
                      json.dumps({"queue": queue_id, "kind": kind, "channel": channel}), self.events.maxlen,
                      self.audit.maxlen, "1" if citizen_id else "0", "1" if trace_id else "0", trace, COUNTER_TTL_S,
                      marker[1] if marker else "", marker[2] if marker else 0],
            )
            if int(ok) == 1:
                return ticket
            # The reference exists. It may be this very ticket: redis-py retries a command whose reply was lost with
            # the connection (store.retry_attempts), so the script may have run once already; a new reference would
            # then open a second ticket. The stored JSON is exactly ours only in that case.
            if await self.store.redis.get(k.ticket(ticket.ref)) == ticket.model_dump_json():
                return ticket
        raise Unavailable("could not allocate a ticket reference")

    async def find(self, ref: str) -> Ticket | None:
        r = normalize_ref(ref)
        return await self.store.get_model(self.store.keys.ticket(r), Ticket) if r else None

    async def get(self, ref: str) -> Ticket:
        t = await self.find(ref)
        if t is None:
            raise NotFound(f"no ticket with reference {ref!r}", {"ref": ref})
        return t

    async def get_many(self, refs: list[str]) -> list[Ticket]:
        if not refs:
            return []
        raws = await self.store.redis.mget([self.store.keys.ticket(r) for r in refs])
        return [Ticket.model_validate_json(r) for r in raws if r]

    async def query(self, *, queue: str | None = None, status: str | None = None, assignee: str | None = None,
                   citizen_id: str | None = None, waiting: bool = False, limit: int = 50, offset: int = 0,
                   visible: Callable[[Ticket], bool] | None = None) -> list[Ticket]:
        """Newest first. Uses the most selective index, then filters the rest in memory (bounded); `visible`
        drops the tickets the caller may not see (an agent's queues) before counting."""
        k = self.store.keys
        if assignee:
            index = k.tickets_agent(assignee)
        elif citizen_id:
            index = k.citizen_tickets(citizen_id)
        elif queue and waiting:
            index = k.queue_items(queue)
        elif queue and (status is None or status in ACTIVE_STATUSES):
            index = k.tickets_queue(queue)
        elif status:
            index = k.tickets_status(status)
        else:
            index = k.tickets_all
        out: list[Ticket] = []
        start, chunk, skipped = 0, max(limit + offset, 100), 0
        for _ in range(20):
            refs: Any = await self.store.redis.zrevrange(index, start, start + chunk - 1)
            if not refs:
                break
            start += chunk
            for t in await self.get_many(refs):
                if (queue and t.queue != queue) or (status and t.status != status) or (assignee and t.assignee != assignee) \
                        or (citizen_id and t.citizen_id != citizen_id) or (waiting and not _waiting(t)) \
                        or (visible is not None and not visible(t)):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(t)
                if len(out) >= limit:
                    return out
        return out

    async def interactions(self, ref: str) -> list[Interaction]:
        r = self._ref(ref)
        raws = await self.store.redis.lrange(self.store.keys.ticket_interactions(r), 0, -1)
        if not raws and not await self.store.redis.exists(self.store.keys.ticket(r)):
            raise NotFound(f"no ticket with reference {ref!r}", {"ref": ref})
        return [Interaction.model_validate_json(x) for x in raws]

    async def trace(self, trace_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """What happened under one trace id (call, voicemail, callback, tickets...): [{kind, id, at}], oldest first.
        Other packages append their own entries to `Keys.trace(trace_id)`."""
        raws = await self.store.redis.lrange(self.store.keys.trace(trace_id), 0, limit - 1)
        out: list[dict[str, Any]] = []
        for raw in raws:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    async def overdue(self, limit: int = 100) -> list[str]:
        now = self.clock.now().timestamp()
        return [str(r) for r in await self.store.redis.zrangebyscore(self.store.keys.tickets_open, "-inf", now, 0, limit)]

    async def count_overdue(self) -> int:
        return int(await self.store.redis.zcount(self.store.keys.tickets_open, "-inf", self.clock.now().timestamp()))

    # ---- changes -----------------------------------------------------------------------------

    def _index_ops(self, pipe: Pipeline, old: Ticket, new: Ticket) -> None:
        k = self.store.keys
        ts = new.updated_at.timestamp()
        created = new.created_at.timestamp()
        if old.status != new.status:
            pipe.zrem(k.tickets_status(old.status), new.ref)
        pipe.zadd(k.tickets_status(new.status), {new.ref: ts})
        if old.queue != new.queue or new.status not in ACTIVE_STATUSES:
            pipe.zrem(k.tickets_queue(old.queue), new.ref)
        if new.status in ACTIVE_STATUSES:
            pipe.zadd(k.tickets_queue(new.queue), {new.ref: created})
            pipe.zadd(k.tickets_open, {new.ref: new.due.timestamp() if new.due else float("inf")})
        else:
            pipe.zrem(k.tickets_open, new.ref)
        pipe.zrem(k.queue_items(old.queue), new.ref)
        if _waiting(new):
            pipe.zadd(k.queue_items(new.queue), {new.ref: created})
        if old.assignee and old.assignee != new.assignee:
            pipe.zrem(k.tickets_agent(old.assignee), new.ref)
        if new.assignee and new.status in ACTIVE_STATUSES:
            pipe.zadd(k.tickets_agent(new.assignee), {new.ref: ts})
        elif new.assignee:
            pipe.zrem(k.tickets_agent(new.assignee), new.ref)

    async def change(self, ref: str, mutate: Callable[[Ticket], list[Interaction]], *, actor: str, action: str,
                     event_type: str = "ticket.updated", details: dict[str, Any] | None = None) -> Ticket:
        """Apply `mutate` (which edits the ticket in place, may raise Conflict/InvalidInput, and returns the
        interactions to append) as one optimistic transaction: retried when someone else changed it meanwhile."""
        r = self._ref(ref)
        k = self.store.keys
        key = k.ticket(r)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for _ in range(100):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(f"no ticket with reference {ref!r}", {"ref": ref})
                    old = Ticket.model_validate_json(raw)
                    new = old.model_copy(deep=True)
                    now = self.clock.now()
                    added = mutate(new)
                    new.updated_at = now
                    new.version = old.version + 1
                    pipe.multi()
                    pipe.set(key, new.model_dump_json())
                    self._index_ops(pipe, old, new)
                    for it in added:
                        it.at = it.at or now
                        pipe.rpush(k.ticket_interactions(r), it.model_dump_json())
                        ck = k.counter(f"interactions:{it.channel}", self.day(now))
                        pipe.incr(ck)
                        pipe.expire(ck, COUNTER_TTL_S)
                    event = {"type": event_type, "ref": r, "queue": new.queue, "status": new.status, "assignee": new.assignee,
                             "kind": new.kind, "subject": new.subject, "actor": actor, "at": now.isoformat(),
                             "interactions": [it.model_dump(mode="json") for it in added]}
                    pipe.xadd(k.events, encode(event), maxlen=self.events.maxlen, approximate=True)  # type: ignore[arg-type]
                    pipe.xadd(k.audit, self.audit.entry(actor, action, r, details), maxlen=self.audit.maxlen,  # type: ignore[arg-type]
                              approximate=True)
                    await pipe.execute()
                    return new
                except WatchError:
                    continue
        raise Unavailable("the ticket is being changed by others, try again", {"ref": ref})

    async def add_interaction(self, ref: str, interaction: Interaction, *, actor: str | None = None) -> Interaction:
        """Append one interaction (a call, voicemail, message, note...). A citizen message on a resolved ticket
        reopens it."""
        actor = actor or interaction.actor

        def mutate(t: Ticket) -> list[Interaction]:
            if interaction.direction == "in" and t.status in ("resolved", "closed"):
                old = t.status
                t.status, t.resolved_at, t.closed_at = "open", None, None
                t.assignee = None
                return [interaction, _status_change(old, "open", "system", "reabierta por un mensaje del ciudadano")]
            if interaction.direction == "out" and t.first_response_at is None:
                t.first_response_at = self.clock.now()
            return [interaction]

        await self.change(ref, mutate, actor=actor, action=f"ticket.{interaction.kind}", event_type="ticket.interaction",
                          details={"interaction": interaction.id, "kind": interaction.kind})
        return interaction

    async def set_status(self, ref: str, status: str, *, actor: str, note: str = "") -> Ticket:
        if status not in TRANSITIONS:
            raise InvalidInput(f"unknown status {status!r}", {"statuses": list(TRANSITIONS)})

        def mutate(t: Ticket) -> list[Interaction]:
            if status not in TRANSITIONS[t.status] or status == t.status:
                raise Conflict(f"ticket {display_ref(t.ref)} is {t.status}; it cannot become {status}",
                               {"ref": t.ref, "status": t.status, "wanted": status}, error_id="invalid-transition")
            old = t.status
            now = self.clock.now()
            t.status = status  # type: ignore[assignment]
            if status == "resolved":
                t.resolved_at = now
            elif status == "closed":
                t.closed_at = now
                t.resolved_at = t.resolved_at or now
            elif status == "open":
                t.assignee, t.resolved_at, t.closed_at = None, None, None
            return [_status_change(old, status, actor, note)]

        return await self.change(ref, mutate, actor=actor, action=f"ticket.{status}",
                                 event_type="ticket.closed" if status == "closed" else "ticket.updated", details={"note": note})

    async def resolve(self, ref: str, *, actor: str, note: str = "") -> Ticket:
        return await self.set_status(ref, "resolved", actor=actor, note=note)

    async def close(self, ref: str, *, actor: str, note: str = "") -> Ticket:
        return await self.set_status(ref, "closed", actor=actor, note=note)

    async def reopen(self, ref: str, *, actor: str, note: str = "") -> Ticket:
        return await self.set_status(ref, "open", actor=actor, note=note)

    async def claim(self, ref: str, agent_id: str, *, actor: str | None = None) -> Ticket:
        """Take a waiting ticket. Exactly one of many concurrent claimers wins; the others get Conflict
        (error_id "already-claimed")."""
        actor = actor or f"agent:{agent_id}"

        def mutate(t: Ticket) -> list[Interaction]:
            if not _waiting(t):
                raise Conflict(f"ticket {display_ref(t.ref)} is already taken or not waiting",
                               {"ref": t.ref, "status": t.status, "assignee": t.assignee}, error_id="already-claimed")
            old = t.status
            t.status, t.assignee = "assigned", agent_id
            return [_status_change(old, "assigned", actor, "", {"assignee": agent_id})]

        return await self.change(ref, mutate, actor=actor, action="ticket.claim", event_type="ticket.assigned",
                                 details={"agent": agent_id})

    async def assign(self, ref: str, agent_id: str | None, *, actor: str, note: str = "") -> Ticket:
        """A supervisor's (re)assignment; agent None puts the ticket back in its queue."""

        def mutate(t: Ticket) -> list[Interaction]:
            if t.status not in ACTIVE_STATUSES:
                raise Conflict(f"ticket {display_ref(t.ref)} is {t.status}", {"ref": t.ref, "status": t.status},
                               error_id="invalid-transition")
            old = t.status
            t.assignee = agent_id
            t.status = "assigned" if agent_id else ("escalated" if t.level >= 2 and old == "escalated" else "open")
            return [_status_change(old, t.status, actor, note, {"assignee": agent_id})]

        return await self.change(ref, mutate, actor=actor, action="ticket.assign", event_type="ticket.assigned",
                                 details={"agent": agent_id, "note": note})

    async def escalate(self, ref: str, *, actor: str, note: str, queue: str | None = None) -> Ticket:
        """Move to the escalation queue (N2) with a note for the specialist; the ticket waits there unassigned."""
        target, level = self._queue(queue or self.cfg.escalation_queue, "query")
        if not note.strip():
            raise InvalidInput("an escalation needs a note for the specialist", {"note": "required"})

        def mutate(t: Ticket) -> list[Interaction]:
            if t.status not in ("open", "assigned"):
                raise Conflict(f"ticket {display_ref(t.ref)} is {t.status}; it cannot be escalated",
                               {"ref": t.ref, "status": t.status}, error_id="invalid-transition")
            if t.queue == target:
                raise Conflict(f"ticket {display_ref(t.ref)} is already in {target}", {"ref": t.ref, "queue": target},
                               error_id="invalid-transition")
            old, old_queue = t.status, t.queue
            t.status, t.assignee, t.queue, t.level = "escalated", None, target, level
            return [Interaction(kind="escalation", channel="api", actor=actor, text=note.strip()[:5000],
                                data={"from_queue": old_queue, "to_queue": target, "from_status": old})]

        return await self.change(ref, mutate, actor=actor, action="ticket.escalate", event_type="ticket.escalated",
                                 details={"to": target, "note": note[:500]})

    async def reply(self, ref: str, text: str, *, actor: str) -> Reply:
        """Store an agent's reply, then deliver it on the ticket's channel through the sender registered for it
        (outbound.py). The reply is kept even when delivery fails; the failure is noted on the ticket."""
        if not text.strip():
            raise InvalidInput("empty reply", {"text": "required"})
        t = await self.get(ref)
        kind = "message" if t.channel == "phone" else _message_kind(t.channel)
        it = Interaction.model_validate({"kind": kind, "channel": t.channel, "actor": actor, "direction": "out",
                                         "text": text[:20000]})
        await self.add_interaction(t.ref, it, actor=actor)
        delivery = Delivery(channel=t.channel, sent=False)
        if self.deliver is not None:
            try:
                delivery.result = await self.deliver(t, it)
                delivery.sent = delivery.result is not None
            except Exception as exc:  # any channel failure: keep the reply, report and note it
                delivery.error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                await self.add_interaction(t.ref, Interaction(kind="note", channel="api", actor="system",
                                                              text=f"Respuesta no entregada: {delivery.error}",
                                                              data={"undelivered": it.id}))
        return Reply(interaction=it, delivery=delivery)

    async def note(self, ref: str, text: str, *, actor: str) -> Interaction:
        if not text.strip():
            raise InvalidInput("empty note", {"text": "required"})
        return await self.add_interaction(ref, Interaction(kind="note", channel="api", actor=actor, text=text[:20000]))

    async def set_delivery(self, ref: str, interaction_id: str, status: str, *, reason: str | None = None,
                           details: dict[str, Any] | None = None, restart: bool = False) -> bool:
        """Record a provider's delivery status (sent, delivered, read, failed) on an outbound interaction, in
        `data["delivery"]`. Statuses only move forward (a late "delivered" never hides "read"; "failed" is final),
        so providers' out-of-order or repeated notifications are harmless. A failure also adds a note, so the
        agent sees the citizen did not get the reply. False when nothing changed.

        `restart`: the reply itself went out only now, as a new message (a WhatsApp reply held behind a template
        the citizen already read): its delivery starts again from `status`."""
        rank = {"sent": 0, "delivered": 1, "read": 2, "failed": 3}
        if status not in rank:
            raise InvalidInput(f"unknown delivery status {status!r}", {"statuses": list(rank)})
        r = self._ref(ref)
        key = self.store.keys.ticket_interactions(r)
        now = self.clock.now()
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for _ in range(50):
                try:
                    await pipe.watch(key)
                    items = await pipe.lrange(key, 0, -1)
                    found: tuple[int, Interaction] | None = None
                    for i, raw in enumerate(items):
                        it = Interaction.model_validate_json(raw)
                        if it.id == interaction_id and it.direction == "out":
                            found = (i, it)
                            break
                    if found is None:
                        await pipe.reset()
                        return False
                    index, it = found
                    previous = it.data.get("delivery")
                    old: dict[str, Any] = previous if isinstance(previous, dict) else {}
                    was = -1 if restart and old.get("status") != "failed" else rank.get(str(old.get("status")), -1)
                    if was > rank[status] or (was == rank[status] and not details):  # only forward, or new details
                        await pipe.reset()
                        return False
                    it.data["delivery"] = {**old, **(details or {}), "status": status, "at": now.isoformat(),
                                           **({"reason": reason[:500]} if reason else {})}
                    pipe.multi()
                    pipe.lset(key, index, it.model_dump_json())
                    await pipe.execute()
                    break
                except WatchError:
                    continue
            else:
                raise Unavailable("the ticket is being changed by others, try again", {"ref": ref})
        if status == "failed":
            await self.add_interaction(r, Interaction(kind="note", channel="api", actor="system",
                                                      text=f"Respuesta no entregada: {reason or 'el proveedor la rechazó'}",
                                                      data={"undelivered": interaction_id}))
        return True

    # ---- channel threads (e-mail Message-ID, chat conversation) -> ticket --------------------

    async def bind_thread(self, channel: str, thread_id: str, ref: str) -> None:
        await self.store.redis.set(self.store.keys.thread(normalize_channel(channel), thread_id), self._ref(ref))

    async def by_thread(self, channel: str, thread_id: str) -> Ticket | None:
        ref = await self.store.redis.get(self.store.keys.thread(normalize_channel(channel), thread_id))
        return await self.find(str(ref)) if ref else None

    # ---- what the citizen hears or reads ------------------------------------------------------

    async def status_view(self, ref: str) -> dict[str, Any]:
        """The public view of a ticket: no names, no texts, only where it stands."""
        t = await self.get(ref)
        return {"ref": display_ref(t.ref), "status": t.status, "status_label": STATUS_LABELS[t.status], "kind": t.kind,
                "created_at": t.created_at.isoformat(), "updated_at": t.updated_at.isoformat(),
                "due": t.due.isoformat() if t.due else None, "text": self.describe(t)}

    async def status_text(self, ref: str, *, spoken: bool = False) -> str:
        """Spanish sentence for chat (spoken=False) or text-to-speech (spoken=True: the reference letter by letter)."""
        return self.describe(await self.get(ref), spoken=spoken)

    def describe(self, t: Ticket, *, spoken: bool = False) -> str:
        noun, fem = _KIND_WORDS.get(t.kind, ("consulta", True))
        a = "a" if fem else "o"
        ref = spoken_ref(t.ref) if spoken else display_ref(t.ref)
        head = f"Su {noun} con referencia {ref}"
        when = spanish_date(t.created_at, self.tz)
        if t.status == "open":
            body = f"se registró {when} y está pendiente de que la atienda un informador"
        elif t.status == "assigned":
            body = f"se registró {when} y la está atendiendo {'un especialista' if t.level >= 2 else 'un informador'}"
        elif t.status == "escalated":
            body = f"se registró {when} y se ha trasladado a un especialista, que le responderá"
        elif t.status == "resolved":
            body = f"está resuelt{a}" + (f" desde {spanish_date(t.resolved_at, self.tz)}" if t.resolved_at else "")
        else:
            body = f"está cerrad{a}" + (f" desde {spanish_date(t.closed_at, self.tz)}" if t.closed_at else "")
        if not fem:
            body = body.replace("la atienda", "lo atienda").replace("la está", "lo está")
        tail = ""
        if t.status in ACTIVE_STATUSES and t.due is not None:
            if t.due >= self.clock.now():
                tail = f" Le responderemos como tarde {spanish_date(t.due, self.tz)}."
            else:
                tail = " Lleva más tiempo del previsto; la hemos marcado como prioritaria." if fem else \
                    " Lleva más tiempo del previsto; lo hemos marcado como prioritario."
        return f"{head} {body}.{tail}"


def _message_kind(channel: str) -> str:
    kinds = {"email": "email", "phone": "call", "webchat": "chat", "telegram": "chat", "whatsapp": "chat"}
    return kinds.get(channel, "message")


def _status_change(old: str, new: str, actor: str, note: str, extra: dict[str, Any] | None = None) -> Interaction:
    return Interaction(kind="status_change", channel="api", actor=actor, text=note,
                       data={"from": old, "to": new, **(extra or {})})


def business_days_fallback(at: datetime, days: int) -> datetime:
    """Weekdays only, for when no calendar service is available (CLI tools, tests of this module)."""
    d: date = at.date()
    added = 0
    while added < days:
        d += timedelta(days=1)
        if d.weekday() < 5:
            added += 1
    return at.replace(year=d.year, month=d.month, day=d.day)
