"""Call records: one per contact the IVR served, kept in Redis (`runtime.calls`).

A record is the engine's `Session`: caller, times, the IVR path with per-step timings,
transcripts with confidence, intent, outcome and ticket reference. It is saved when the call
starts, after each step, and at the end, so a live call is visible and a crash loses little.
A turn whose answer the recogniser chose from the expected ones by the audio (the transcript had
no words or one: "C," for a "sí") carries `chosen`: the value, its margin and what was transcribed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from core.errors import NotFound
from core.store import Store
from ivr.contact import Session

CallRecord = Session


class CallRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def save(self, record: CallRecord) -> None:
        k = self.store.keys
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.call(record.call_id), record.model_dump_json())
            pipe.zadd(k.calls, {record.call_id: record.started_at.timestamp()})
            await pipe.execute()

    async def get(self, call_id: str) -> CallRecord:
        rec = await self.store.get_model(self.store.keys.call(call_id), CallRecord)
        if rec is None:
            raise NotFound(f"no call {call_id}", {"call_id": call_id})
        return rec

    async def list(self, *, since: datetime | None = None, until: datetime | None = None, outcome: str | None = None,
                   limit: int = 100, offset: int = 0) -> list[CallRecord]:
        """Newest first."""
        k = self.store.keys
        hi = until.timestamp() if until else "+inf"
        lo = since.timestamp() if since else "-inf"
        out: list[CallRecord] = []
        start = offset
        while len(out) < limit:
            ids = await self.store.redis.zrevrangebyscore(k.calls, hi, lo, start=start, num=max(limit, 50))
            if not ids:
                break
            start += len(ids)
            raws = await self.store.redis.mget([k.call(str(i)) for i in ids])
            for raw in raws:
                if raw is None:
                    continue
                rec = CallRecord.model_validate_json(raw)
                if outcome is None or rec.outcome == outcome:
                    out.append(rec)
                    if len(out) >= limit:
                        break
        return out


def survey_summary(records: Iterable[CallRecord]) -> dict[str, Any]:
    """Post-contact survey answers (1-5): how many, their average, and the spread, by who served the contact."""
    out: dict[str, Any] = {}
    for rec in records:
        if rec.survey is None:
            continue
        kind = "agent" if rec.vars.get("agent") else "self_service"
        row = out.setdefault(kind, {"answers": 0, "sum": 0, "by_score": {str(n): 0 for n in range(1, 6)}})
        row["answers"] += 1
        row["sum"] += rec.survey
        row["by_score"][str(rec.survey)] += 1
    for row in out.values():
        row["average"] = round(row.pop("sum") / row["answers"], 2)
    return out


def containment(records: Iterable[CallRecord], self_service_intents: set[str]) -> dict[str, Any]:
    """Share of contacts resolved by self-service among those whose intent has a self-service answer."""
    eligible = resolved = total = 0
    by_outcome: dict[str, int] = {}
    for rec in records:
        total += 1
        by_outcome[rec.outcome or "abandoned"] = by_outcome.get(rec.outcome or "abandoned", 0) + 1
        if rec.intent in self_service_intents:
            eligible += 1
            if rec.outcome == "self_service":
                resolved += 1
    return {"calls": total, "eligible": eligible, "self_service": resolved,
            "containment": round(resolved / eligible, 3) if eligible else None, "by_outcome": by_outcome}
