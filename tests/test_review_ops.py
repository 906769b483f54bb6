"""Review findings on operations (real Redis, over HTTP): the CDR export parses its pages off the event loop and
runs one at a time per node (a second one gets a 429); two supervisors cannot both join a call, and one's `off`
never removes the other's request; a disposition counts once per ticket or call (a change moves the count)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest

import ivr.cdr as cdr_module
from atiende.runtime import Runtime
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

