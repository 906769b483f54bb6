"""Review findings on operations (real Redis, over HTTP): the CDR export parses its pages off the event loop and
runs one at a time per node (a second one gets a 429); two supervisors cannot both join a call, and one's `off`
never removes the other's request; a disposition counts once per ticket or call (a change moves the count)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest

import ivr.cdr as cdr_module
from atiende.runtime import Runtime
from core.clock import FixedClock
from desk_api.routes.operations import Operations, _HeldStream
from ivr.contact import Session
from tests.conftest import STAFF_PASSWORD

pytestmark = pytest.mark.anyio


async def _login(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"username": user, "password": STAFF_PASSWORD})
    assert r.status_code == 200, r.text
    client.cookies.clear()  # the bearer token speaks for the user; requests without it go as the admin
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def _ended_call(runtime: Runtime, call_id: str, agent: str = "ana") -> None:
    now = runtime.clock.now()
    await runtime.calls.save(Session(call_id=call_id, trace_id=f"tr-{call_id}", channel="voice", caller="+34600111222",
                                     started_at=now - timedelta(minutes=3), ended_at=now, queue="N1",
                                     outcome="transferred", vars={"agent": agent}))


# ---- 1. CDR export: off the loop, one at a time ----------------------------------------------------------------


async def test_cdr_export_parses_in_a_thread_and_a_second_one_is_refused(
        client: httpx.AsyncClient, runtime: Runtime, staff: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    await _ended_call(runtime, "c-exp-1")
    await _ended_call(runtime, "c-exp-2")
    sup = {"X-API-Key": staff["ivr_key"]}
    loop, loop_thread = asyncio.get_running_loop(), threading.get_ident()
    parsing, release = asyncio.Event(), threading.Event()
    threads: list[int] = []
    real = cdr_module.call_detail

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        if threading.get_ident() != loop_thread:  # never block the loop itself (the old code parsed on it)
            loop.call_soon_threadsafe(parsing.set)
            release.wait(30)  # the first export stays in progress until the test lets it go
        return real(*args, **kwargs)

    monkeypatch.setattr(cdr_module, "call_detail", spy)
    first = asyncio.create_task(client.get("/api/v1/cdr.csv", headers=sup))
    waiting = asyncio.create_task(parsing.wait())
    await asyncio.wait({first, waiting}, return_when=asyncio.FIRST_COMPLETED)
    try:
        second = await client.get("/api/v1/cdr.csv", headers=sup)
    finally:
        release.set()
        waiting.cancel()
    r1 = await first
    assert threads and loop_thread not in threads  # every record was parsed off the event loop
    assert second.status_code == 429, second.text
    assert second.json()["error_id"] == "export-in-progress"
    assert "Ya hay una exportación de CDR en curso" in second.json()["message"]
    assert r1.status_code == 200 and "c-exp-1" in r1.text and "c-exp-2" in r1.text
    third = await client.get("/api/v1/cdr.csv", headers=sup)  # the slot is free again once the first is done
    assert third.status_code == 200 and third.text.count("\n") == 3


async def test_cdr_export_slot_is_freed_when_the_client_is_gone_before_the_first_byte(
        client: httpx.AsyncClient, runtime: Runtime, staff: dict[str, str]) -> None:
    assert (await client.get("/api/v1/cdr.csv", headers={"X-API-Key": staff["ivr_key"]})).status_code == 200
    ops = client._transport.app.state.operations  # type: ignore[attr-defined]
    assert isinstance(ops, Operations)
    slot = ops.cdr.export_slot()
    response = _HeldStream(ops.cdr.csv(None, None), slot, media_type="text/csv")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        raise OSError("connection reset")

    with pytest.raises(Exception):  # noqa: B017 - starlette's ClientDisconnect
        await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    ops.cdr.export_slot().release()  # not refused: the slot came back


# ---- 2. one supervisor per call, atomically ---------------------------------------------------------------------


async def _supervisors(runtime: Runtime, client: httpx.AsyncClient) -> tuple[dict[str, str], dict[str, str]]:
    auth = runtime.desk.auth
    await auth.create_user("sara", "Sara", ["supervisor"], STAFF_PASSWORD, level=2, skills=["general"],
                           sip_uri="sip:sara@127.0.0.1:5092")
    await auth.create_user("rosa", "Rosa", ["supervisor"], STAFF_PASSWORD, level=2, skills=["general"],
                           sip_uri="sip:rosa@127.0.0.1:5093")
    return await _login(client, "sara"), await _login(client, "rosa")


async def _live(runtime: Runtime, call_id: str) -> str:
    store = runtime.store
    doc = {"call_id": call_id, "queue": "N1", "agent": "ana", "since": "x", "since_ts": 1.0, "recording": False}
    await store.redis.set(store.keys.call_live(call_id), json.dumps(doc), ex=60)
    return store.keys.call_supervise(call_id)


async def test_two_supervisors_joining_at_once_one_gets_409(client: httpx.AsyncClient, runtime: Runtime,
                                                            staff: dict[str, str]) -> None:
    sara, rosa = await _supervisors(runtime, client)
    key = await _live(runtime, "c-race")
    for _ in range(5):
        await runtime.store.redis.delete(key)
        a, b = await asyncio.gather(
            client.post("/api/v1/calls/c-race/supervise", headers=sara, json={"mode": "barge"}),
            client.post("/api/v1/calls/c-race/supervise", headers=rosa, json={"mode": "barge"}))
        assert sorted((a.status_code, b.status_code)) == [202, 409], (a.text, b.text)
        loser = a if a.status_code == 409 else b
        assert loser.json()["error_id"] == "already-supervised"
        winner = "user:sara" if a.status_code == 202 else "user:rosa"
        assert json.loads(str(await runtime.store.redis.get(key)))["supervisor"] == winner


async def test_off_never_removes_another_supervisors_request(client: httpx.AsyncClient, runtime: Runtime,
                                                             staff: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sara, rosa = await _supervisors(runtime, client)
    key = await _live(runtime, "c-off")
    redis = runtime.store.redis
    real_get = redis.get

    async def rosa_off_while_sara_joins(forget_rosa: bool) -> httpx.Response:
        """rosa reads the request (nothing, or her own); before she acts on it, her request is forgotten (her
        phone did not answer) if she had one, and sara joins."""
        raced: list[int] = []

        async def get(name: str, *args: Any, **kwargs: Any) -> Any:
            value = await real_get(name, *args, **kwargs)
            if name == key and not raced:
                raced.append(0)
                if forget_rosa:
                    await redis.delete(key)
                raced[0] = (await client.post("/api/v1/calls/c-off/supervise", headers=sara,
                                              json={"mode": "listen"})).status_code
            return value

        monkeypatch.setattr(redis, "get", get)
        try:
            return await client.post("/api/v1/calls/c-off/supervise", headers=rosa, json={"mode": "off"})
        finally:
            monkeypatch.undo()
            assert raced == [202]

    # rosa was on no call: her `off` has nothing to remove
    r = await rosa_off_while_sara_joins(forget_rosa=False)
    assert r.status_code == 202, r.text
    assert json.loads(str(await redis.get(key)))["supervisor"] == "user:sara"  # sara's request is still there
    assert (await client.post("/api/v1/calls/c-off/supervise", headers=sara, json={"mode": "off"})).status_code == 202
    assert await redis.get(key) is None

    # rosa's own request was replaced by sara's in between: her `off` is refused, sara's stays
    assert (await client.post("/api/v1/calls/c-off/supervise", headers=rosa, json={"mode": "listen"})).status_code == 202
    r = await rosa_off_while_sara_joins(forget_rosa=True)
    assert r.status_code == 409 and r.json()["error_id"] == "already-supervised", r.text
    assert json.loads(str(await redis.get(key)))["supervisor"] == "user:sara"


# ---- 3. dispositions count once ---------------------------------------------------------------------------------


async def _report(client: httpx.AsyncClient, staff: dict[str, str], day: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/reports/dispositions?start={day}&end={day}", headers={"X-API-Key": staff["ivr_key"]})
    assert r.status_code == 200, r.text
    codes: dict[str, Any] = r.json()["codes"]
    return codes


async def test_a_call_disposition_counts_once_and_a_change_moves_it(client: httpx.AsyncClient, runtime: Runtime,
                                                                    staff: dict[str, str], clock: FixedClock) -> None:
    await _ended_call(runtime, "c-disp")
    ana = await _login(client, "ana")
    day1 = clock.now().date().isoformat()
    for _ in range(3):
        r = await client.post("/api/v1/calls/c-disp/disposition", headers=ana, json={"code": "cita"})
        assert r.status_code == 200 and r.json()["disposition"]["code"] == "cita", r.text
    assert (await _report(client, staff, day1))["cita"]["calls"] == 1
    r = await client.post("/api/v1/calls/c-disp/disposition", headers=ana, json={"code": "informado"})
    assert r.status_code == 200 and r.json()["disposition"]["code"] == "informado"
    got = await _report(client, staff, day1)
    assert (got["cita"]["calls"], got["informado"]["calls"]) == (0, 1)
    # a change the next day takes the count off the day it was counted
    clock.advance(86400)
    day2 = clock.now().date().isoformat()
    r = await client.post("/api/v1/calls/c-disp/disposition", headers=ana, json={"code": "cita"})
    assert r.status_code == 200
    before, after = await _report(client, staff, day1), await _report(client, staff, day2)
    assert (before["informado"]["calls"], before["cita"]["calls"]) == (0, 0)
    assert (after["cita"]["calls"], after["informado"]["calls"]) == (1, 0)
    stored = json.loads(str(await runtime.store.redis.get(runtime.store.keys.call_disposition("c-disp"))))
    assert stored["code"] == "cita"


async def test_a_ticket_disposition_counts_once_and_a_change_moves_it(client: httpx.AsyncClient, runtime: Runtime,
                                                                      staff: dict[str, str], clock: FixedClock) -> None:
    ana = await _login(client, "ana")
    t = await runtime.desk.tickets.create(channel="phone", queue="N1", subject="Padrón", body="empadronarme")
    assert (await client.post(f"/api/v1/tickets/{t.ref}/claim", headers=ana)).status_code == 200
    day = clock.now().date().isoformat()
    for _ in range(2):
        r = await client.post(f"/api/v1/tickets/{t.ref}/disposition", headers=ana, json={"code": "cita"})
        assert r.status_code == 200 and r.json()["meta"]["disposition"]["code"] == "cita", r.text
    assert (await _report(client, staff, day))["cita"]["tickets"] == 1
    r = await client.post(f"/api/v1/tickets/{t.ref}/disposition", headers=ana, json={"code": "informado"})
    assert r.status_code == 200 and r.json()["meta"]["disposition"]["code"] == "informado"
    got = await _report(client, staff, day)
    assert (got["cita"]["tickets"], got["informado"]["tickets"]) == (0, 1)
    # closing with the code it already has counts nothing more
    r = await client.post(f"/api/v1/tickets/{t.ref}/close", headers=ana, json={"disposition": "informado"})
    assert r.status_code == 200, r.text
    assert (await _report(client, staff, day))["informado"]["tickets"] == 1
