"""Callbacks: first-class work items with a due time, attempts and an outcome.

A callback is due at the line's next opening after the voicemail (or when the caller
chose a callback instead of waiting). Agents take them in due order (queue position
breaks ties), or the worker dials them itself when `auto_dial` is on. Unanswered calls
are retried per policy, always inside opening hours.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from core.errors import Conflict, InvalidInput, NotFound
from core.phone import check as phone_check
from core.store import Keys, dumps

if TYPE_CHECKING:
    from collections.abc import Callable

    from config.voicemail import VoicemailConfig
    from core.clock import Clock
    from core.store import Store
    from routing.calendar_service import CalendarService

Outcome = Literal["reached", "no_answer", "busy", "wrong_number", "resolved"]
Status = Literal["pending", "in_progress", "done", "failed"]
RETRY_OUTCOMES = {"no_answer", "busy"}


class VoicemailInfo(BaseModel):
    call_id: str
    path: str
    sha256: str
    duration_s: float
    complete: bool = True
    transcript: str = ""
    confidence: float = 0.0


class Attempt(BaseModel):
    at: datetime
    actor: str
    outcome: Outcome
    note: str = ""


class Callback(BaseModel):
    id: str
    ticket_ref: str | None = None
    phone: str
    trace_id: str | None = None
    reason: Literal["voicemail", "overflow", "manual"] = "voicemail"
    created_at: datetime
    due_at: datetime
    priority: int = Field(0, description="lower first among callbacks due at the same time (queue position)")
    status: Status = "pending"
    outcome: Outcome | None = None
    claimed_by: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    voicemail: VoicemailInfo | None = None
    overdue: bool = False


def _score(due: datetime, priority: int) -> float:
    # Seconds resolution plus a small priority fraction keeps due order first, queue position second.
    return float(int(due.timestamp())) + min(max(priority, 0), 999) / 1000.0


# Atomically take the first callback due at or before now.
_CLAIM_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #ids == 0 then return nil end
redis.call('ZREM', KEYS[1], ids[1])
return ids[1]
"""


class CallbackService:
    def __init__(self, policy: Callable[[], VoicemailConfig], store: Store, clock: Clock,
                 calendars: CalendarService) -> None:
        """`policy` reads the voicemail section as it is now (retries, overdue limit)."""
        self._policy = policy
        self._store = store
        self._clock = clock
        self._calendars = calendars

    @property
    def _k(self) -> Keys:
        return self._store.keys

    async def _save(self, cb: Callback) -> None:
        await self._store.redis.set(self._k.callback(cb.id), dumps(cb))

    def _flag(self, cb: Callback, now: datetime) -> Callback:
        limit = timedelta(minutes=self._policy().callback_overdue_minutes)
        cb.overdue = cb.status in ("pending", "in_progress") and now > cb.due_at + limit
        return cb

    async def next_due_time(self, after: datetime) -> datetime:
        cal = await self._calendars.get()
        return after if cal.status(after).open else cal.next_open(after)

    async def create(
        self,
        *,
        phone: str,
        ticket_ref: str | None,
        trace_id: str | None = None,
        reason: Literal["voicemail", "overflow", "manual"] = "voicemail",
        priority: int = 0,
        voicemail: VoicemailInfo | None = None,
        due_at: datetime | None = None,
    ) -> Callback:
        if not phone.strip():
            raise InvalidInput("a callback needs a phone number", {"phone": phone})
        policy = self._policy()
        number = phone_check(phone, allow_international=policy.callback_allow_international,
                             blocked=tuple(policy.callback_blocked))
        if not number.allowed or number.e164 is None:
            raise InvalidInput(f"no se puede devolver la llamada a {phone.strip()[:40]!r}: {number.reason}",
                               {"phone": phone.strip()[:40], "category": number.category}, error_id="phone-not-allowed")
        phone = number.e164
        now = self._clock.now()
        due = due_at or await self.next_due_time(now)
        cb = Callback(
            id=uuid.uuid4().hex[:12], ticket_ref=ticket_ref, phone=phone.strip(), trace_id=trace_id, reason=reason,
            created_at=now, due_at=due, priority=priority, voicemail=voicemail,
        )
        async with self._store.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._k.callback(cb.id), dumps(cb))
            pipe.zadd(self._k.callbacks_due, {cb.id: _score(due, priority)})
            pipe.zadd(self._k.callbacks_all, {cb.id: now.timestamp()})
            await pipe.execute()
        return cb

    async def get(self, callback_id: str) -> Callback:
        raw = await self._store.redis.get(self._k.callback(callback_id))
        if raw is None:
            raise NotFound(f"no callback {callback_id}", {"id": callback_id})
        return self._flag(Callback.model_validate_json(raw), self._clock.now())

    async def query(self, *, status: str | None = None, limit: int = 200) -> list[Callback]:
        """Open callbacks first in due order, then the rest newest first."""
        ids = await self._store.redis.zrevrange(self._k.callbacks_all, 0, max(0, limit - 1))
        now = self._clock.now()
        out: list[Callback] = []
        for raw in await self._store.redis.mget([self._k.callback(str(i)) for i in ids]) if ids else []:
            if raw:
                cb = self._flag(Callback.model_validate_json(raw), now)
                if status is None or cb.status == status:
                    out.append(cb)
        out.sort(key=lambda c: (c.status not in ("pending", "in_progress"), c.due_at, c.priority))
        return out

    async def claim_next(self, actor: str) -> Callback | None:
        """Take the first due callback, atomically: two agents never get the same one."""
        now = self._clock.now()
        cb_id = await self._store.redis.eval(_CLAIM_LUA, 1, self._k.callbacks_due, str(now.timestamp()))
        if cb_id is None:
            return None
        cb = await self.get(cb_id)
        cb.status, cb.claimed_by = "in_progress", actor
        await self._save(cb)
        return cb

    async def claim(self, callback_id: str, actor: str) -> Callback:
        removed = await self._store.redis.zrem(self._k.callbacks_due, callback_id)
        if not removed:
            cb = await self.get(callback_id)
            raise Conflict(f"callback {callback_id} is {cb.status}, claimed by {cb.claimed_by}", {"status": cb.status})
        cb = await self.get(callback_id)
        cb.status, cb.claimed_by = "in_progress", actor
        await self._save(cb)
        return cb

    async def record_attempt(self, callback_id: str, outcome: Outcome, actor: str, note: str = "") -> Callback:
        cb = await self.get(callback_id)
        if cb.status in ("done", "failed"):
            raise Conflict(f"callback {callback_id} is already {cb.status}", {"status": cb.status})
        now = self._clock.now()
        cb.attempts.append(Attempt(at=now, actor=actor, outcome=outcome, note=note))
        cb.outcome = outcome
        cb.claimed_by = None
        policy = self._policy()
        if outcome in RETRY_OUTCOMES and len(cb.attempts) < policy.callback_max_attempts:
            cb.status = "pending"
            cb.due_at = await self.next_due_time(now + timedelta(minutes=policy.callback_retry_minutes))
            await self._store.redis.zadd(self._k.callbacks_due, {cb.id: _score(cb.due_at, cb.priority)})
        else:
            cb.status = "failed" if outcome in RETRY_OUTCOMES else "done"
        await self._save(cb)
        return self._flag(cb, now)

    async def release(self, callback_id: str) -> Callback:
        """Give a claimed callback back untouched (agent logged out, dial could not start)."""
        cb = await self.get(callback_id)
        if cb.status == "in_progress":
            cb.status, cb.claimed_by = "pending", None
            await self._save(cb)
            await self._store.redis.zadd(self._k.callbacks_due, {cb.id: _score(cb.due_at, cb.priority)})
        return cb
