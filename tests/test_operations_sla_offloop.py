"""Review: GET /api/v1/sla/at-risk assessed every active ticket (business time summed day by day) on the event
loop that also paces calls' audio. The tickets and calendars are now fetched on the loop and assessed in a worker
thread; the answer is the one SlaService.at_risk gives. Real Redis, the app over ASGI."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import httpx
import pytest

import desk.sla as sla_mod
from atiende.runtime import Runtime
from core.clock import FixedClock
from desk_api.routes.operations import build_operations
from tests.conftest import ADMIN_KEY, MADRID

pytestmark = pytest.mark.anyio


async def test_at_risk_is_assessed_off_the_loop_with_the_same_answer(
        client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    desk = runtime.desk
    refs = []
    for i in range(30):
        t = await desk.tickets.create(channel="email", queue="N1" if i % 2 else "N2", subject=f"Consulta {i}")
        refs.append(t.ref)
        if i % 3 == 0:
            await desk.tickets.reply(t.ref, "Le respondemos", actor="user:ana")  # first response met: resolution only
    clock.set(datetime(2026, 11, 24, 13, 30, tzinfo=MADRID))  # next day: first responses overdue, some warnings

    loop_thread = threading.get_ident()
    threads: list[int] = []
    real = sla_mod.assess

    def spy(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(sla_mod, "assess", spy)
    r = await client.get("/api/v1/sla/at-risk", params={"limit": 15}, headers={"X-API-Key": ADMIN_KEY})
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(threads) == 30 and loop_thread not in threads  # every ticket, none on the loop's thread

    ops = build_operations(runtime.current_settings, runtime.store, runtime.clock, desk, runtime.calendars,
                           runtime.calls)
    try:
        expected = await ops.sla.at_risk(15)
    finally:
        await ops.close()
    assert got["count"] == len(expected) == 15  # 20 at risk (the 10 answered are ok), the first 15
    assert [(x["ref"], x["sla"], x["level"], x["due"]) for x in got["tickets"]] == [
        (s.ref, s.sla, s.level, s.due.isoformat()) for s in expected]
    assert {x["level"] for x in got["tickets"]} <= {"warning", "breach"}
