"""Calendar over HTTP: /api/v1/hours, admin edits applied at once, refused edits, versions, rollback, restart."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from core.store import Store
from tests.conftest import MADRID

pytestmark = pytest.mark.anyio
ADMIN = "/api/v1/admin/calendars"


async def hours(client: httpx.AsyncClient, at: str, **params: str) -> dict[str, Any]:
    r = await client.get("/api/v1/hours", params={"at": at, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_hours_endpoint(client: httpx.AsyncClient) -> None:
    body = await hours(client, "2026-12-08T10:00:00+01:00")
    assert body["open"] is False and body["rule"] == "holiday:Inmaculada Concepción"
    assert body["next_open"] == "2026-12-09T08:30:00+01:00" and body["calendar"] == "line"
    assert body["holiday"] == "Inmaculada Concepción" and body["text"].startswith("Hoy es festivo")
    # default instant: the runtime's clock (Mon 2026-11-23 10:00 Madrid)
    r = await client.get("/api/v1/hours")
    assert r.json()["at"] == "2026-11-23T10:00:00+01:00" and r.json()["open"] is True
    assert (await hours(client, "2026-11-23T15:00"))["at"] == "2026-11-23T15:00:00+01:00"  # naive = local
    for bad in ("yesterday", "9999-12-31T23:00:00+00:00"):
        r = await client.get("/api/v1/hours", params={"at": bad})
        assert r.status_code == 422 and r.json()["error_id"] == "invalid-input"
    r = await client.get("/api/v1/hours", params={"calendar": "nope"})
    assert r.status_code == 404
    r = await client.get("/api/v1/hours/2026-12-24")
    assert r.json()["text"] == "de 8:30 a 14:30 y de 16:00 a 18:00" and len(r.json()["intervals"]) == 2


async def test_closure_applies_at_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await hours(client, "2026-11-23T10:00:00+01:00"))["open"] is True
    r = await client.post(f"{ADMIN}/line/closures", json={"date": "2026-11-23", "reason": "avería"},
                          headers={"X-Actor": "ana"})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    body = await hours(client, "2026-11-23T10:00:00+01:00")
    assert (body["open"], body["rule"], body["next_open"]) == (False, "closure:avería", "2026-11-24T08:30:00+01:00")
    cal = await runtime.calendars.get()
    assert cal.version == 1 and not cal.is_open(runtime.clock.now())
    # a span closure, removed again by its start
    r = await client.post(f"{ADMIN}/line/closures", json={"start": "2026-11-24T10:00:00", "end": "2026-11-24T11:00:00"})
    assert r.status_code == 201
    assert (await hours(client, "2026-11-24T10:30:00+01:00"))["rule"] == "closure:cierre"
    r = await client.delete(f"{ADMIN}/line/closures/2026-11-24T10:00:00")
    assert r.status_code == 200
    assert (await hours(client, "2026-11-24T10:30:00+01:00"))["open"] is True
    r = await client.delete(f"{ADMIN}/line/closures/2026-11-23")
    assert r.status_code == 200 and (await hours(client, "2026-11-23T10:00:00+01:00"))["open"] is True
    assert (await client.delete(f"{ADMIN}/line/closures/2026-11-23")).status_code == 404
    assert (await client.delete(f"{ADMIN}/line/closures/someday")).status_code == 422


@pytest.mark.parametrize(("method", "path", "body", "reason"), [
    ("post", "/line/closures", {"start": "2026-11-23T12:00:00", "end": "2026-11-23T11:00:00"}, "before it starts"),
    ("put", "/line/weekly", {"mon": [{"start": "08:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]}, "overlap"),
    ("patch", "/line", {"timezone": "Mars/Olympus"}, "unknown timezone"),
    ("patch", "/line", {"colour": "red"}, "unknown"),
    ("post", "/line/special-days", {"date": "2026-12-24", "intervals": [{"start": "14:00", "end": "09:00"}]},
     "before it starts"),
    ("put", "/line/seasons", [{"name": "a", "start": "06-01", "end": "07-01", "weekly": {}},
                              {"name": "b", "start": "06-15", "end": "08-01", "weekly": {}}], "overlap"),
    ("post", "/line/holidays", {"date": "2026-02-30", "name": "x"}, "date"),
])
async def test_invalid_edit_is_refused(client: httpx.AsyncClient, method: str, path: str, body: Any, reason: str) -> None:
    before = await hours(client, "2026-11-23T10:00:00+01:00")
    r = await client.request(method.upper(), ADMIN + path, json=body)
    assert r.status_code == 422, r.text
    assert reason in r.text and r.json()["details"]
    assert await hours(client, "2026-11-23T10:00:00+01:00") == before
    versions = (await client.get(f"{ADMIN}/versions")).json()
    assert [v["version"] for v in versions] == [0]


async def test_overlapping_closure_refused_after_valid_one(client: httpx.AsyncClient) -> None:
    ok = {"start": "2026-11-23T09:00:00", "end": "2026-11-23T11:00:00", "reason": "simulacro"}
    assert (await client.post(f"{ADMIN}/line/closures", json=ok)).status_code == 201
    r = await client.post(f"{ADMIN}/line/closures", json={"start": "2026-11-23T10:00:00", "end": "2026-11-23T12:00:00"})
    assert r.status_code == 422 and "overlap" in r.json()["message"]
    assert (await hours(client, "2026-11-23T10:00:00+01:00"))["rule"] == "closure:simulacro"
    assert (await client.post(f"{ADMIN}/line/holidays", json={"date": "2026-05-15", "name": "San Isidro"})).status_code == 201
    r = await client.post(f"{ADMIN}/line/holidays", json={"date": "2026-05-15", "name": "otra"})
    assert r.status_code == 422 and "twice" in r.json()["message"]


async def test_versions_and_rollback(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{ADMIN}/line/holidays", json={"date": "2026-11-23", "name": "Fiesta local"},
                          headers={"X-Actor": "eva"})
    assert r.json()["version"] == 1 and r.json()["calendar"]["calendar"]["local_holidays"][0]["name"] == "Fiesta local"
    summer = [{"name": "verano", "start": "07-01", "end": "08-31",
               "weekly": {"mon": [{"start": "09:00", "end": "13:00"}]}}]
    assert (await client.put(f"{ADMIN}/line/seasons", json=summer)).json()["version"] == 2
    assert (await hours(client, "2026-11-23T10:00:00+01:00"))["rule"] == "holiday:Fiesta local"
    assert (await hours(client, "2026-06-22T16:30:00+02:00"))["open"] is True  # summer now starts in July
    assert (await hours(client, "2026-07-06T12:30:00+02:00"))["rule"] == "season:verano"
    versions = (await client.get(f"{ADMIN}/versions")).json()
    # the actor is the authenticated principal (the test client's admin key), never a header the caller chose
    assert [(v["version"], v["actor"], v["active"]) for v in versions] == [(0, "config-files", False),
                                                                           (1, "key:test-admin", False),
                                                                           (2, "key:test-admin", True)]
    assert "add holiday" in versions[1]["note"]
    r = await client.post(f"{ADMIN}/rollback", json={"version": 0}, headers={"X-Actor": "eva"})
    assert r.status_code == 200 and r.json()["version"] == 3
    assert (await hours(client, "2026-11-23T10:00:00+01:00"))["rule"] == "weekly:mon"
    r = await client.post(f"{ADMIN}/rollback", json={"version": 1})
    assert (await hours(client, "2026-11-23T10:00:00+01:00"))["rule"] == "holiday:Fiesta local"
    old = (await client.get(f"{ADMIN}/versions/1")).json()
    assert old["calendars"]["line"]["local_holidays"] == [{"date": "2026-11-23", "name": "Fiesta local"}]
    assert (await client.post(f"{ADMIN}/rollback", json={"version": 42})).status_code == 404
    assert (await client.get(f"{ADMIN}/versions/42")).status_code == 404


async def test_read_calendar_and_named_calendars(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{ADMIN}/line")
    body = r.json()
    assert body["default"] is True and body["version"] == 0 and body["hours_text"].startswith("de lunes a viernes")
    assert body["calendar"]["timezone"] == "Europe/Madrid"
    chat = {"timezone": "Atlantic/Canary", "weekly": {d: [{"start": "09:00", "end": "21:00"}] for d in ("mon", "tue", "wed")}}
    assert (await client.put(f"{ADMIN}/chat", json=chat)).status_code == 200
    body = await hours(client, "2026-11-23T20:00:00+00:00", calendar="chat")
    assert body["open"] is True and body["at"] == "2026-11-23T20:00:00+00:00" and body["calendar"] == "chat"
    listing = (await client.get(ADMIN)).json()
    assert sorted(listing["calendars"]) == ["chat", "line"] and listing["default"] == "line"
    assert (await client.delete(f"{ADMIN}/line")).status_code == 422  # the default stays
    assert (await client.delete(f"{ADMIN}/chat")).status_code == 200
    assert (await client.get(f"{ADMIN}/chat")).status_code == 404
    assert (await client.put(f"{ADMIN}/Bad Name", json={})).status_code == 422
    assert (await client.post(f"{ADMIN}/nope/holidays", json={"date": "2026-05-15", "name": "x"})).status_code == 404


async def test_special_day_and_patch(client: httpx.AsyncClient) -> None:
    special = {"date": "2026-12-24", "intervals": [{"start": "08:30", "end": "14:00"}], "reason": "Nochebuena"}
    assert (await client.post(f"{ADMIN}/line/special-days", json=special)).status_code == 201
    body = await hours(client, "2026-12-24T12:00:00+01:00")
    assert body["rule"] == "special:Nochebuena" and body["next_open"] == "2026-12-28T08:30:00+01:00"
    assert (await client.delete(f"{ADMIN}/line/special-days/2026-12-24")).status_code == 200
    assert (await client.delete(f"{ADMIN}/line/special-days/2026-12-24")).status_code == 404
    r = await client.patch(f"{ADMIN}/line", json={"public_holidays": {"enabled": False}})
    assert r.status_code == 200
    assert (await hours(client, "2026-12-08T10:00:00+01:00"))["open"] is True
    assert "festivos" not in r.json()["calendar"]["hours_text"]


async def test_edits_survive_restart(client: httpx.AsyncClient, runtime: Runtime, store: Store) -> None:
    r = await client.post(f"{ADMIN}/line/closures", json={"date": "2026-11-23", "reason": "obras"})
    assert r.status_code == 201
    again = Store(store.url, prefix=store.keys.p)  # a new process: new connection pool, new runtime, no caches
    try:
        fresh = Runtime(runtime.loaded, store=again, clock=runtime.clock)
        cal = await fresh.calendars.get()
        st = cal.status(runtime.clock.now())
        assert (st.open, st.rule, cal.version) == (False, "closure:obras", 1)
        assert [v.version for v in await fresh.calendars.versions()] == [0, 1]
        assert fresh.calendars.get_offline().version == 0 and fresh.calendars.get_offline().is_open(runtime.clock.now())
    finally:
        await again.close()


async def test_concurrent_edits_are_not_lost(client: httpx.AsyncClient, runtime: Runtime) -> None:
    import anyio

    async def add(day: int) -> None:
        r = await client.post(f"{ADMIN}/line/holidays", json={"date": f"2026-05-{day:02d}", "name": f"día {day}"})
        assert r.status_code == 201

    async with anyio.create_task_group() as tg:
        for day in range(10, 16):
            tg.start_soon(add, day)
    cal = await runtime.calendars.get()
    assert len(cal.model.local_holidays) == 6 and cal.version == 6
    from datetime import datetime

    assert cal.status(datetime(2026, 5, 12, 10, tzinfo=MADRID)).rule == "holiday:día 12"


async def test_config_file_reload_applies_without_restart(client: httpx.AsyncClient, runtime: Runtime, tmp_path: Any) -> None:
    assert (await hours(client, "2026-11-23T10:00:00+01:00"))["open"] is True
    (tmp_path / "calendar.yaml").write_text(
        "calendars:\n  line:\n    closures: [{date: 2026-11-23, reason: inventario}]\n", encoding="utf-8")
    runtime.config_dir = tmp_path
    assert runtime.reload()
    assert (await hours(client, "2026-11-23T10:00:00+01:00"))["rule"] == "closure:inventario"
    # an invalid file is refused by reload; the calendar in force keeps serving
    (tmp_path / "calendar.yaml").write_text("calendars:\n  line:\n    timezone: Mars/Olympus\n", encoding="utf-8")
    assert not runtime.reload()
    assert (await hours(client, "2026-11-23T10:00:00+01:00"))["rule"] == "closure:inventario"
