"""The reports over call records (surveys, containment) read a bounded window: the last 31 days by default, at
most 366 days per request (422 beyond, or reversed), so a request without dates does not read every call ever
recorded."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from atiende.runtime import Runtime
from core.clock import FixedClock
from ivr.contact import Session

pytestmark = pytest.mark.anyio


async def _calls(runtime: Runtime, now: datetime) -> None:
    """Answered surveys 10, 40 and 400 days ago (5 from an agent's call, 1 and 3 self-service)."""
    for days, score, agent in ((10, 5, "ana"), (40, 1, None), (400, 3, None)):
        rec = Session(call_id=f"c-{days}d", trace_id=f"tr-{days}", started_at=now - timedelta(days=days),
                      intent="tasa_itv", outcome="self_service" if agent is None else "transferred", survey=score,
                      vars={"agent": agent} if agent else {})
        await runtime.calls.save(rec)


def _q(t: datetime) -> str:
    return t.isoformat()


async def test_surveys_default_to_the_last_month_and_are_capped_at_a_year(client: httpx.AsyncClient,
                                                                          runtime: Runtime, clock: FixedClock) -> None:
    now = clock.now()
    await _calls(runtime, now)
    r = await client.get("/api/v1/calls/surveys")
    assert r.status_code == 200 and r.json() == {
        "agent": {"answers": 1, "by_score": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 1}, "average": 5.0}}
    r = await client.get("/api/v1/calls/surveys", params={"since": _q(now - timedelta(days=45))})
    assert r.status_code == 200 and r.json()["self_service"]["answers"] == 1 and r.json()["agent"]["answers"] == 1
    # `until` alone: the month before it
    r = await client.get("/api/v1/calls/surveys", params={"until": _q(now - timedelta(days=35))})
    assert r.status_code == 200 and set(r.json()) == {"self_service"} and r.json()["self_service"]["average"] == 1.0
    # a whole year is allowed; more is refused, as is a reversed window
    r = await client.get("/api/v1/calls/surveys", params={"since": _q(now - timedelta(days=366)), "until": _q(now)})
    assert r.status_code == 200 and r.json()["self_service"]["answers"] == 1
    r = await client.get("/api/v1/calls/surveys", params={"since": _q(now - timedelta(days=401))})
    assert r.status_code == 422 and "366 días" in r.json()["message"], r.text
    r = await client.get("/api/v1/calls/surveys", params={"since": _q(now - timedelta(days=500)),
                                                          "until": _q(now - timedelta(days=100))})
    assert r.status_code == 422
    r = await client.get("/api/v1/calls/surveys", params={"since": _q(now), "until": _q(now - timedelta(days=1))})
    assert r.status_code == 422 and r.json()["message"] == "El periodo empieza después de terminar"
    # a time without an offset is local time, not a 500 for comparing naive and aware times
    naive = (now - timedelta(days=45)).replace(tzinfo=None).isoformat()
    r = await client.get("/api/v1/calls/surveys", params={"since": naive})
    assert r.status_code == 200 and r.json()["self_service"]["answers"] == 1


async def test_containment_reads_the_same_window(client: httpx.AsyncClient, runtime: Runtime,
                                                 clock: FixedClock) -> None:
    now = clock.now()
    await _calls(runtime, now)
    r = await client.get("/api/v1/calls/containment")
    assert r.status_code == 200 and r.json()["calls"] == 1 and r.json()["by_outcome"] == {"transferred": 1}
    r = await client.get("/api/v1/calls/containment", params={"since": _q(now - timedelta(days=366))})
    assert r.json()["calls"] == 2 and r.json()["by_outcome"] == {"transferred": 1, "self_service": 1}
    r = await client.get("/api/v1/calls/containment", params={"since": _q(now - timedelta(days=367))})
    assert r.status_code == 422
