"""Reports as JSON: interactions by channel and day, containment, waiting times, abandoned calls, overdue tickets.

Producers record what only they know; the desk counts its own interactions and tickets:

    await desk.reports.record_contact("phone", contained=True)        # IVR / chat assistant: a contact finished;
                                                                       # contained = resolved without a person
    await desk.reports.record_wait("phone", 42.0, abandoned=False)    # a queued call (or chat) waited 42 s
    data = await desk.reports.summary(date(2026, 11, 1), date(2026, 11, 30))

Counters are per local day (the line's timezone) in Redis (`Keys.counter`, `Keys.report_hist`), kept 400 days.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from core.clock import Clock
from core.errors import InvalidInput
from core.store import Store
from desk.models import CHANNELS
from desk.tickets import COUNTER_TTL_S, TicketService

WAIT_BUCKETS = (10, 30, 60, 120, 300, 600, 1800)  # seconds: upper bounds of the waiting-time histogram
MAX_DAYS = 366


class Reports:
    def __init__(self, store: Store, clock: Clock, tz: ZoneInfo, tickets: TicketService) -> None:
        self.store = store
        self.clock = clock
        self.tz = tz
        self.tickets = tickets

    def day(self, at: datetime | None = None) -> str:
        return (at or self.clock.now()).astimezone(self.tz).date().isoformat()

    async def record_contact(self, channel: str, *, contained: bool, at: datetime | None = None) -> None:
        k, d = self.store.keys, self.day(at)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for name in [f"contacts:{channel}"] + ([f"contained:{channel}"] if contained else []):
                pipe.incr(k.counter(name, d))
                pipe.expire(k.counter(name, d), COUNTER_TTL_S)
            await pipe.execute()

    async def record_wait(self, channel: str, seconds: float, *, abandoned: bool = False, at: datetime | None = None) -> None:
        k, d = self.store.keys, self.day(at)
        seconds = max(0.0, float(seconds))
        bucket = next((str(b) for b in WAIT_BUCKETS if seconds <= b), "inf")
        hk = k.report_hist(f"wait:{channel}", d)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(hk, bucket, 1)
            pipe.hincrby(hk, "count", 1)
            pipe.hincrbyfloat(hk, "sum", seconds)
            if abandoned:
                pipe.hincrby(hk, "abandoned", 1)
            pipe.expire(hk, COUNTER_TTL_S)
            await pipe.execute()

    async def summary(self, start: date | None = None, end: date | None = None) -> dict[str, Any]:
        today = self.clock.now().astimezone(self.tz).date()
        end = end or today
        start = start or end - timedelta(days=6)
        if start > end:
            raise InvalidInput("start is after end", {"start": start.isoformat(), "end": end.isoformat()})
        if (end - start).days >= MAX_DAYS:
            raise InvalidInput(f"at most {MAX_DAYS} days per report", {"days": (end - start).days + 1})
        days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
        k = self.store.keys
        names = ["tickets"] + [f"{m}:{c}" for m in ("interactions", "contacts", "contained") for c in CHANNELS]
        counter_keys = [k.counter(n, d) for d in days for n in names]
        values = await self.store.redis.mget(counter_keys)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for d in days:
                for c in CHANNELS:
                    pipe.hgetall(k.report_hist(f"wait:{c}", d))
            hists = await pipe.execute()
        per_day: list[dict[str, Any]] = []
        totals: dict[str, dict[str, int]] = {m: dict.fromkeys(CHANNELS, 0) for m in ("interactions", "contacts", "contained")}
        waits: dict[str, dict[str, float]] = {c: {"count": 0, "sum": 0.0, "abandoned": 0} for c in CHANNELS}
        buckets: dict[str, dict[str, int]] = {c: {} for c in CHANNELS}
        i = h = 0
        for d in days:
            row: dict[str, Any] = {"day": d}
            for n in names:
                v = int(values[i] or 0)
                i += 1
                if n == "tickets":
                    row["tickets_created"] = v
                    continue
                metric, channel = n.split(":", 1)
                row.setdefault(metric, {})[channel] = v
                totals[metric][channel] += v
            row["containment"] = _share(sum(row["contained"].values()), sum(row["contacts"].values()))
            per_day.append(row)
            for c in CHANNELS:
                hist = hists[h]
                h += 1
                waits[c]["count"] += int(hist.get("count", 0))
                waits[c]["sum"] += float(hist.get("sum", 0))
                waits[c]["abandoned"] += int(hist.get("abandoned", 0))
                for b, v in hist.items():
                    if b not in ("count", "sum", "abandoned"):
                        buckets[c][b] = buckets[c].get(b, 0) + int(v)
        wait_out = {
            c: {"count": int(w["count"]), "avg_s": round(w["sum"] / w["count"], 1) if w["count"] else None,
                "abandoned": int(w["abandoned"]), "abandoned_share": _share(int(w["abandoned"]), int(w["count"])),
                "histogram": {f"<={b}s": buckets[c].get(str(b), 0) for b in WAIT_BUCKETS}
                | {">1800s": buckets[c].get("inf", 0)}}
            for c, w in waits.items() if w["count"]
        }
        contacts, contained = sum(totals["contacts"].values()), sum(totals["contained"].values())
        overdue = await self.tickets.overdue(limit=50)
        return {
            "start": start.isoformat(), "end": end.isoformat(), "timezone": str(self.tz),
            "days": per_day,
            "interactions_by_channel": totals["interactions"],
            "containment": {"contacts": contacts, "contained": contained, "share": _share(contained, contacts),
                            "by_channel": {c: _share(totals["contained"][c], totals["contacts"][c]) for c in CHANNELS
                                           if totals["contacts"][c]}},
            "waiting": wait_out,
            "abandoned_calls": {"calls": int(waits["phone"]["count"]), "abandoned": int(waits["phone"]["abandoned"]),
                                "share": _share(int(waits["phone"]["abandoned"]), int(waits["phone"]["count"]))},
            "open_past_due": {"count": await self.tickets.count_overdue(), "refs": overdue},
        }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
