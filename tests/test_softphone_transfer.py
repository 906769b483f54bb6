"""Review (security) of POST /api/v1/calls/{call_id}/transfer: only the agent on the call (or a supervisor, for a
call an agent is on now) may hand the caller to another queue; a malformed call id or an unknown queue is refused
before anything reaches the store; every transfer is audited. Real Redis, the app over ASGI."""

from __future__ import annotations

import json

import httpx
import pytest

from atiende.runtime import Runtime
from tests.conftest import STAFF_PASSWORD

pytestmark = pytest.mark.anyio


async def _as(runtime: Runtime, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {(await runtime.desk.auth.login(user, STAFF_PASSWORD)).token}"}


async def test_transfer_rights_ids_and_audit(client: httpx.AsyncClient, runtime: Runtime,
                                             staff: dict[str, str]) -> None:
    desk, store = runtime.desk, runtime.store
    call_id = "5f2b0c1e9a7d4e3f8b6a@10.0.0.5"
    await desk.agents.set_presence("ana", "busy", actor="ivr", current=f"call:{call_id}")
    ana, luis, sup = await _as(runtime, "ana"), await _as(runtime, "luis"), await _as(runtime, "supervisora")
    url = f"/api/v1/calls/{call_id}/transfer"

    # another agent's call: refused, nothing stored
    r = await client.post(url, json={"queue": "N2"}, headers=luis)
    assert r.status_code == 403, r.text
    assert await store.redis.get(store.keys.call_transfer(call_id)) is None
    # garbage call ids: 422 before any store key is built from them
    for bad in ("x%20y", "a" * 201, "call%0Ainjected", "%3Cscript%3E", "*"):
        r = await client.post(f"/api/v1/calls/{bad}/transfer", json={"queue": "N2"}, headers=ana)
        assert r.status_code == 422 and r.json()["details"].get("call_id") is not None, (bad, r.text)
    # a target that is no queue
    r = await client.post(url, json={"queue": "sip:600123456@evil.example"}, headers=ana)
    assert r.status_code == 422 and "no queue" in r.text
    assert await store.redis.get(store.keys.call_transfer(call_id)) is None
    # the agent on the call: accepted and audited
    r = await client.post(url, json={"queue": "N2"}, headers=ana)
    assert r.status_code == 202, r.text
    assert await store.redis.get(store.keys.call_transfer(call_id)) == "N2"
    await store.redis.delete(store.keys.call_transfer(call_id))
    # a supervisor: only a call an agent is on now (published by its node), never a made-up one
    r = await client.post("/api/v1/calls/no-such-call/transfer", json={"queue": "N1"}, headers=sup)
    assert r.status_code == 404 and r.json()["error_id"] == "call-not-live", r.text
    assert await store.redis.get(store.keys.call_transfer("no-such-call")) is None
    await store.redis.set(store.keys.call_live(call_id), json.dumps({"call_id": call_id, "agent": "ana",
                                                                      "queue": "N1"}), ex=60)
    r = await client.post(url, json={"queue": "N1"}, headers=sup)
    assert r.status_code == 202, r.text
    assert await store.redis.get(store.keys.call_transfer(call_id)) == "N1"
    entries = [e for e in await desk.audit.entries(count=200) if e["action"] == "call.transfer"]
    assert [(e["actor"], e["target"], e["details"]) for e in reversed(entries)] == [
        ("user:ana", call_id, {"queue": "N2", "agent": "ana"}),
        ("user:supervisora", call_id, {"queue": "N1", "agent": "ana"}),
    ]


async def test_a_principal_without_an_agent_record_cannot_transfer(client: httpx.AsyncClient, runtime: Runtime,
                                                                   staff: dict[str, str]) -> None:
    await runtime.desk.auth.create_user("sinagente", "Sin agente", ["agent_n1"], STAFF_PASSWORD, level=1)
    await runtime.desk.agents.delete("sinagente", actor="test")
    r = await client.post("/api/v1/calls/abc123/transfer", json={"queue": "N2"}, headers=await _as(runtime, "sinagente"))
    assert r.status_code == 403, r.text
