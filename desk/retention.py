"""Retention: each kind of personal data is kept `desk.retention.<kind>_days` (0 = forever), then anonymised where
a record must stay (tickets, call records) or deleted (citizens, recordings, audit entries).

    summary = await desk.retention.run_once()   # {"tickets": n, "citizens": n, "calls": n, "recordings": n,
                                                #  "call_recordings": n, "attachments": n, "audit": n}

What a ticket or a call record takes with it when it is anonymised is deleted in the same round and counted:
the recordings of its calls (voicemails, agent calls) and the files sent on it, whatever `recordings_days` says
(an anonymous record beside a recording of the person would undo the anonymisation).

`atiende run` calls it every `retention.interval_s` (atiende/components.py); one node at a time does a round
(a lock with a TTL in Redis), and each round does at most `retention.batch` items of each kind, so a first run on
years of data spreads over several rounds instead of holding Redis. Progress is kept in cursors
(`Keys.retention_cursor`): tickets by their last change, call records by their start; citizens are swept in a
circle, since a citizen's age says nothing of their last contact.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from config.desk import Retention
from core.clock import Clock
from core.store import Store
from desk.audit import AuditLog
from desk.citizens import CitizenService
from desk.models import ACTIVE_STATUSES, Citizen
from desk.privacy import ATTACHMENTS, CALL_RECORDINGS, RECORDINGS, PrivacyService, anonymous_call
from desk.tickets import TicketService

log = logging.getLogger(__name__)
ACTOR = "retention"


class RetentionService:
    def __init__(self, store: Store, clock: Clock, policy: Callable[[], Retention], privacy: PrivacyService,
                 citizens: CitizenService, tickets: TicketService, audit: AuditLog, data_dir: Callable[[], Path]) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self.privacy = privacy
        self.citizens = citizens
        self.tickets = tickets
        self.audit = audit
        self.data_dir = data_dir
        self._erased = 0
        self._deleted: Counter[str] = Counter()  # files deleted this round along with tickets, calls, citizens

    def _cutoff(self, days: int) -> float | None:
        return None if days <= 0 else (self.clock.now() - timedelta(days=days)).timestamp()

    async def _cursor(self, kind: str) -> str:
        raw = await self.store.redis.get(self.store.keys.retention_cursor(kind))
        return "(" + str(raw) if raw else "-inf"  # exclusive: that score is done

    async def _advance(self, kind: str, score: float | None) -> None:
        k = self.store.keys.retention_cursor(kind)
        if score is None:
            await self.store.redis.delete(k)
        else:
            await self.store.redis.set(k, repr(score))

    async def run_once(self) -> dict[str, int]:
        p = self.policy()
        self._erased = 0
        self._deleted = Counter()
        tickets = await self._tickets(p)  # a ticket's anonymisation may let its citizen go too
        await self._citizens(p)
        calls = await self._calls(p)
        recordings = await self._recordings(p)
        call_recordings = await self._call_recordings(p)
        out = {"tickets": tickets, "citizens": self._erased, "calls": calls,
               "recordings": recordings + self._deleted[RECORDINGS],
               "call_recordings": call_recordings + self._deleted[CALL_RECORDINGS],
               "attachments": self._deleted[ATTACHMENTS], "audit": await self._audit(p)}
        if any(out.values()):
            await self.audit.record(ACTOR, "retention.run", "retention", out)
            log.info("retention round", extra={"fields": out})
        return out

    async def run_if_due(self, interval_s: int) -> dict[str, int] | None:
        """One round unless another node did one in the last `interval_s` (a lock with that TTL)."""
        if not await self.store.redis.set(self.store.keys.lock("retention"), str(os.getpid()), nx=True, ex=interval_s):
            return None
        return await self.run_once()

    async def _tickets(self, p: Retention) -> int:
        cutoff = self._cutoff(p.tickets_days)
        if cutoff is None:
            return 0
        done = 0
        for status in ("resolved", "closed"):
            kind = f"tickets:{status}"
            rows: Any = await self.store.redis.zrangebyscore(self.store.keys.tickets_status(status), await self._cursor(kind),
                                                             cutoff, start=0, num=p.batch, withscores=True)
            for ref, score in rows:
                t = await self.tickets.find(str(ref))
                citizen_id = t.citizen_id if t else None
                if await self.privacy.anonymise_ticket(str(ref), self._deleted):
                    done += 1
                    if citizen_id:
                        await self._maybe_erase(citizen_id, self._cutoff(p.citizens_days))
                await self._advance(kind, float(score))
        return done

    async def _erasable(self, c: Citizen, cutoff: float | None) -> bool:
        if cutoff is None or c.updated_at.timestamp() > cutoff:
            return False
        for t in await self.tickets.get_many(await self.citizens.tickets(c.id, limit=10_000)):
            if t.status in ACTIVE_STATUSES or not t.meta.get("anonymised") or t.updated_at.timestamp() > cutoff:
                return False
        return True

    async def _maybe_erase(self, citizen_id: str, cutoff: float | None) -> bool:
        try:
            c = await self.citizens.get(citizen_id)
        except Exception:
            return False
        if not await self._erasable(c, cutoff):
            return False
        summary = await self.privacy.erase(c.id, actor=ACTOR)
        self._erased += 1
        for kind in (RECORDINGS, CALL_RECORDINGS, ATTACHMENTS):
            self._deleted[kind] += int(summary.get(f"{kind}_deleted", 0))
        return True

    async def _citizens(self, p: Retention) -> int:
        cutoff = self._cutoff(p.citizens_days)
        if cutoff is None:
            return 0
        rows: Any = await self.store.redis.zrangebyscore(self.store.keys.citizens, await self._cursor("citizens"), cutoff,
                                                         start=0, num=p.batch, withscores=True)
        done = 0
        for cid, score in rows:
            done += await self._maybe_erase(str(cid), cutoff)
            await self._advance("citizens", float(score))
        if len(rows) < p.batch:
            await self._advance("citizens", None)  # swept to the cutoff: start over next round
        return done

    async def _calls(self, p: Retention) -> int:
        cutoff = self._cutoff(p.calls_days)
        if cutoff is None:
            return 0
        k = self.store.keys
        rows: Any = await self.store.redis.zrangebyscore(k.calls, await self._cursor("calls"), cutoff, start=0,
                                                         num=p.batch, withscores=True)
        done = 0
        for cid, score in rows:
            raw = await self.store.redis.get(k.call(str(cid)))
            if raw is not None and '"anonymised":true' not in str(raw).replace(" ", ""):
                await self.store.redis.set(k.call(str(cid)), anonymous_call(str(raw)))
                self._deleted[CALL_RECORDINGS] += await self.privacy.delete_call_recordings(str(cid))
                done += 1
            await self._advance("calls", float(score))
        return done

    async def _recordings(self, p: Retention) -> int:
        cutoff = self._cutoff(p.recordings_days)
        if cutoff is None:
            return 0
        cutoff = min(cutoff, time.time() - p.recordings_days * 86400)  # file times are wall-clock, like audit ids
        directory = self.data_dir() / "voicemail"

        def old_files() -> list[str]:
            if not directory.is_dir():
                return []
            out = []
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name.endswith(".wav") and entry.is_file() and entry.stat().st_mtime < cutoff:
                        out.append(entry.name[:-4])
                        if len(out) >= p.batch:
                            break
            return out

        done = 0
        for call_id in await asyncio.to_thread(old_files):
            done += await self.privacy.delete_recording(call_id)
        return done

    async def _call_recordings(self, p: Retention) -> int:
        """Recordings of agent calls (ivr/conference.py) go after `recordings_days` like voicemails: the file and
        every shared copy; their record stays, marked deleted, so the call still says it was recorded."""
        cutoff = self._cutoff(p.recordings_days)
        if cutoff is None:
            return 0
        rows: Any = await self.store.redis.zrangebyscore(self.store.keys.call_recordings, "-inf", cutoff, start=0,
                                                         num=p.batch, withscores=True)
        done = 0
        for rec_id, _score in rows:
            done += await self.privacy.delete_call_recording(str(rec_id))  # also leaves the index: no rescan
        return done

    async def _audit(self, p: Retention) -> int:
        cutoff = self._cutoff(p.audit_days)
        if cutoff is None:
            return 0
        # Stream ids are Redis's wall-clock milliseconds; the service clock may be shifted (demos), so the older of
        # the two decides and a shifted clock never drops entries early.
        ms = int(min(cutoff, time.time() - p.audit_days * 86400) * 1000)
        return int(await self.store.redis.xtrim(self.store.keys.audit, minid=f"{ms}-0", approximate=False))
