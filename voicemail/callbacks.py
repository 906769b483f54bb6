"""Callbacks: first-class work items with a due time, attempts and an outcome.

A callback is due at the line's next opening after the voicemail (or when the caller
chose a callback instead of waiting). Agents take them in due order (queue position
breaks ties), or the worker dials them itself when `auto_dial` is on. Unanswered calls
are retried per policy, always inside opening hours.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from core import logs
from core.errors import Conflict, InvalidInput, NotFound
from core.lease import Lease, LeaseLost
from core.phone import check as phone_check
from core.store import Keys, dumps

if TYPE_CHECKING:
    from collections.abc import Callable

    from config.voicemail import VoicemailConfig
    from core.clock import Clock
    from core.store import Store
    from routing.calendar_service import CalendarService

log = logging.getLogger(__name__)
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
    claimed_until: datetime | None = Field(None, description="an in-progress claim not settled by then was abandoned: "
                                                               "the callback is due again")
    attempts: list[Attempt] = Field(default_factory=list)
    voicemail: VoicemailInfo | None = None
    overdue: bool = False


def _score(due: datetime, priority: int) -> float:
    # Seconds resolution plus a small priority fraction keeps due order first, queue position second.
    return float(int(due.timestamp())) + min(max(priority, 0), 999) / 1000.0


# How long a claim holds when the claimer says nothing: an agent's call and its notes. A claim older than this was
# abandoned (the agent's session or the worker's node died) and the callback is handed out again.
CLAIM_HOLD = timedelta(hours=1)
CAS_ROUNDS = 50  # compare-and-set retries before a busy callback is reported as a conflict
RECLAIM_BATCH = 20
ADOPT_BATCH = 500  # callbacks read per round trip when looking for claims an older version left unindexed

# Every change of a callback is one compare-and-set of its document together with the sets that index it, so no
# interruption (a cancelled task, a dead node, a lost connection) can leave a callback claimed in one place and due
# in another. The sets follow the status: pending -> in `due` (score: due time and priority), in_progress -> in
# `claimed` (score: when the claim runs out), done/failed -> in neither.
# KEYS[1] the callback, KEYS[2] due, KEYS[3] claimed, KEYS[4] all, KEYS[5] the fencing lease (KEYS[1] when none).
# ARGV[1] id, ARGV[2] the document as read ('' = must not exist yet), ARGV[3] the new document, ARGV[4] due score
# ('' = not due), ARGV[5] claim deadline ('' = not claimed), ARGV[6] created score ('' = not new), ARGV[7] the
# lease's value ('' = no fencing), ARGV[8] 'due' (must still be due) or 'expired' (its claim ran out by ARGV[9]).
# 1 = done, 0 = changed meanwhile (read again), -1 = the lease is no longer the caller's.
_SWAP_LUA = """
if ARGV[7] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[7] then return -1 end
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[2] then return 0 end
if ARGV[8] == 'due' and not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
if ARGV[8] == 'expired' then
  local deadline = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if not deadline or tonumber(deadline) > tonumber(ARGV[9]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) else redis.call('ZREM', KEYS[2], ARGV[1]) end
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1]) else redis.call('ZREM', KEYS[3], ARGV[1]) end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1]) end
return 1
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

    async def _read(self, callback_id: str) -> tuple[str, Callback] | None:
        raw = await self._store.redis.get(self._k.callback(callback_id))
        return None if raw is None else (str(raw), Callback.model_validate_json(raw))

    async def _swap(self, before: str, cb: Callback, *, require: Literal["", "due", "expired"] = "",
                    now: datetime | None = None, lease: Lease | None = None, created: datetime | None = None) -> bool:
        """Write `cb` if its document is still `before` (and the lease still the caller's); False: read again."""
        due = str(_score(cb.due_at, cb.priority)) if cb.status == "pending" else ""
        until = ""
        if cb.status == "in_progress":
            cb.claimed_until = cb.claimed_until or self._clock.now() + CLAIM_HOLD
            until = str(cb.claimed_until.timestamp())
        k = self._k
        got = int(await self._store.redis.eval(
            _SWAP_LUA, 5, k.callback(cb.id), k.callbacks_due, k.callbacks_claimed, k.callbacks_all,
            k.lease(lease.name) if lease is not None else k.callback(cb.id),
            cb.id, before, dumps(cb), due, until, str(created.timestamp()) if created else "",
            lease.value if lease is not None else "", require, str(now.timestamp()) if now else ""))
        if got < 0:
            assert lease is not None
            raise LeaseLost(f"lease {lease.name} (token {lease.token}) is no longer held: callback {cb.id} not taken")
        return got == 1

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
        callback_id: str | None = None,
    ) -> Callback:
        """A pending callback. With `callback_id` (derived from what it answers, e.g. a voicemail) a retry returns
        the callback an earlier try created instead of a second one."""
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
            id=callback_id or uuid.uuid4().hex[:12], ticket_ref=ticket_ref, phone=phone.strip(), trace_id=trace_id,
            reason=reason, created_at=now, due_at=due, priority=priority, voicemail=voicemail,
        )
        if not await self._swap("", cb, created=now):
            if callback_id is None:
                raise Conflict(f"callback id {cb.id} already taken, retry", {"id": cb.id})
            return await self.get(callback_id)  # created by an earlier try of the same caller: once only
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

    async def claim_next(self, actor: str, *, lease: Lease | None = None, hold: timedelta = CLAIM_HOLD) -> Callback | None:
        """Take the first due callback, atomically: two agents never get the same one, and its status changes in the
        same step as it leaves the due list. With `lease` (the callback worker's) the claim is refused with LeaseLost
        once the lease is not this holder's any more (fencing: a paused or cut-off node cannot take work). The claim
        holds for `hold`; one not settled by then is handed out again."""
        now = self._clock.now()
        await self.reclaim(now)
        for _ in range(CAS_ROUNDS):
            ids = await self._store.redis.zrangebyscore(self._k.callbacks_due, "-inf", now.timestamp(), start=0, num=1)
            if not ids:
                return None
            got = await self._read(cb_id := str(ids[0]))
            if got is None:  # an index entry without its document (removed by retention meanwhile)
                await self._store.redis.zrem(self._k.callbacks_due, cb_id)
                continue
            before, cb = got
            if cb.status != "pending":
                # Listed as due but taken meanwhile (an older version's claim is two steps, and the adoption scan
                # may list it again between them): off the list, never handed to a second agent.
                await self._store.redis.zrem(self._k.callbacks_due, cb_id)
                continue
            cb.status, cb.claimed_by, cb.claimed_until = "in_progress", actor, now + hold
            if await self._swap(before, cb, require="due", lease=lease):
                return self._flag(cb, now)
        raise Conflict("callbacks are being claimed by others, retry", {})

    async def claim(self, callback_id: str, actor: str, *, hold: timedelta = CLAIM_HOLD) -> Callback:
        now = self._clock.now()
        for _ in range(CAS_ROUNDS):
            got = await self._read(callback_id)
            if got is None:
                raise NotFound(f"no callback {callback_id}", {"id": callback_id})
            before, cb = got
            if cb.status != "pending":
                raise Conflict(f"callback {callback_id} is {cb.status}, claimed by {cb.claimed_by}", {"status": cb.status})
            cb.status, cb.claimed_by, cb.claimed_until = "in_progress", actor, now + hold
            if await self._swap(before, cb, require="due"):
                return self._flag(cb, now)
        raise Conflict(f"callback {callback_id} is changing, retry", {"id": callback_id})

    async def reclaim(self, now: datetime | None = None) -> list[str]:
        """Claims that ran out (the agent never came back, the worker's node was killed mid-call): due again."""
        now = now or self._clock.now()
        ids = await self._store.redis.zrangebyscore(self._k.callbacks_claimed, "-inf", now.timestamp(), start=0,
                                                    num=RECLAIM_BATCH)
        out: list[str] = []
        for raw_id in ids:
            got = await self._read(cb_id := str(raw_id))
            if got is None:
                await self._store.redis.zrem(self._k.callbacks_claimed, cb_id)
                continue
            before, cb = got
            if cb.status == "in_progress":
                log.warning("callback claim abandoned, due again",
                            extra=logs.fields(callback_id=cb.id, claimed_by=cb.claimed_by))
                cb.status, cb.claimed_by, cb.claimed_until = "pending", None, None
            if await self._swap(before, cb, require="expired", now=now):
                out.append(cb.id)
        return out

    async def adopt_unindexed(self, now: datetime | None = None, *,
                              holds: dict[str, timedelta] | None = None) -> list[str]:
        """Index what versions before fenced claims (9d5f546) left outside the due and claimed sets, where neither
        `claim_next` nor `reclaim` ever sees it: a claim saved `in_progress` without a deadline, and a claim cut
        between taking the callback off the due list and saving it (`pending`, in neither set). The first gets a
        deadline a full hold from now (`holds` per claimer, else CLAIM_HOLD), as nobody knows when it was made: a
        claim still being worked on keeps it, an abandoned one is handed out again once it runs out. The second is
        due again at once. Reads every callback: run it now and then (the callback worker does, every
        ADOPT_EVERY_S), not per claim. Returns the ids it indexed. (While a node on the older version still runs, a
        claim of its that this scan meets between its two steps is listed again: a window of one round trip, once
        per scan.)"""
        now = now or self._clock.now()
        r, k = self._store.redis, self._k
        out: list[str] = []
        start = 0
        while True:
            ids = [str(i) for i in await r.zrange(k.callbacks_all, start, start + ADOPT_BATCH - 1)]
            if not ids:
                return out
            start += len(ids)
            docs = await r.mget([k.callback(i) for i in ids])
            async with r.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.zscore(k.callbacks_due, i)
                    pipe.zscore(k.callbacks_claimed, i)
                scores = await pipe.execute()
            for n, (cb_id, raw) in enumerate(zip(ids, docs, strict=True)):
                due, claimed = scores[2 * n], scores[2 * n + 1]
                if raw is None or due is not None or claimed is not None:
                    continue
                before = str(raw)
                if '"status":"done"' in before or '"status":"failed"' in before:
                    # Most of the history, settled: not parsed (a scan over 20,000 of them took 1.2 s of the CPU
                    # that paces calls' audio). In compact JSON the pair can only be the status field itself.
                    continue
                cb = Callback.model_validate_json(before)
                if cb.status == "in_progress":
                    hold = (holds or {}).get(cb.claimed_by or "", CLAIM_HOLD)
                    cb.claimed_until = cb.claimed_until or now + hold
                elif cb.status != "pending":
                    continue  # done or failed: rightly in neither set
                # A compare-and-set like every other change: one that changed meanwhile is looked at next time.
                if await self._swap(before, cb):
                    log.warning("callback left unindexed by an older version: %s", "claim given a deadline"
                                if cb.status == "in_progress" else "due again",
                                extra=logs.fields(callback_id=cb.id, claimed_by=cb.claimed_by))
                    out.append(cb_id)

    async def record_attempt(self, callback_id: str, outcome: Outcome, actor: str, note: str = "") -> Callback:
        for _ in range(CAS_ROUNDS):
            got = await self._read(callback_id)
            if got is None:
                raise NotFound(f"no callback {callback_id}", {"id": callback_id})
            before, cb = got
            if cb.status in ("done", "failed"):
                raise Conflict(f"callback {callback_id} is already {cb.status}", {"status": cb.status})
            now = self._clock.now()
            cb.attempts.append(Attempt(at=now, actor=actor, outcome=outcome, note=note))
            cb.outcome = outcome
            cb.claimed_by, cb.claimed_until = None, None
            policy = self._policy()
            if outcome in RETRY_OUTCOMES and len(cb.attempts) < policy.callback_max_attempts:
                cb.status = "pending"
                cb.due_at = await self.next_due_time(now + timedelta(minutes=policy.callback_retry_minutes))
            else:
                cb.status = "failed" if outcome in RETRY_OUTCOMES else "done"
            if await self._swap(before, cb):
                return self._flag(cb, now)
        raise Conflict(f"callback {callback_id} is changing, retry", {"id": callback_id})

    async def relink(self, callback_id: str, ticket_ref: str) -> Callback:
        """Point a callback at another ticket (its voicemail filed again after a failover lost the first ticket)."""
        for _ in range(CAS_ROUNDS):
            got = await self._read(callback_id)
            if got is None:
                raise NotFound(f"no callback {callback_id}", {"id": callback_id})
            before, cb = got
            if cb.ticket_ref == ticket_ref:
                return self._flag(cb, self._clock.now())
            cb.ticket_ref = ticket_ref
            if await self._swap(before, cb):
                return self._flag(cb, self._clock.now())
        raise Conflict(f"callback {callback_id} is changing, retry", {"id": callback_id})

    async def release(self, callback_id: str, actor: str | None = None) -> Callback:
        """Give a claimed callback back untouched (agent logged out, dial could not start, the worker stopping);
        with `actor`, only that claimer's claim (not one handed to someone else after it ran out)."""
        for _ in range(CAS_ROUNDS):
            got = await self._read(callback_id)
            if got is None:
                raise NotFound(f"no callback {callback_id}", {"id": callback_id})
            before, cb = got
            if cb.status != "in_progress" or (actor is not None and cb.claimed_by != actor):
                return self._flag(cb, self._clock.now())
            cb.status, cb.claimed_by, cb.claimed_until = "pending", None, None
            if await self._swap(before, cb):
                return self._flag(cb, self._clock.now())
        raise Conflict(f"callback {callback_id} is changing, retry", {"id": callback_id})
