"""An agent hands the caller to another queue from the desk: the request reaches whichever node bridges the call
(through the store), the agent's leg is hung up and the caller waits again, at the head of the new queue."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from ivr.distribution import TRANSFER_POLL_S, Transfer

pytestmark = pytest.mark.anyio


class _Leg:
    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def hangup(self, reason: str = "normal") -> None:
        self.ended.set()


class _Caller:
    """The caller's side of a bridge: it lasts until the agent's leg ends."""

    async def bridge(self, other: Any) -> None:
        await other.ended.wait()


async def test_a_transfer_request_ends_the_agent_leg_and_names_the_queue(runtime: Runtime) -> None:
    queue = runtime.agent_queue
    agent = _Leg()
    task = asyncio.create_task(queue._bridge_until_transfer(_Caller(), agent, "call-1"))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert not task.done()
    await runtime.store.redis.set(runtime.store.keys.call_transfer("call-1"), "N2", ex=30)
    result = await asyncio.wait_for(task, TRANSFER_POLL_S * 3)
    assert result == Transfer(queue="N2") and agent.ended.is_set()
    assert await runtime.store.redis.get(runtime.store.keys.call_transfer("call-1")) is None  # taken once


async def test_a_bridge_that_ends_by_itself_is_no_transfer(runtime: Runtime) -> None:
    agent = _Leg()
    task = asyncio.create_task(runtime.agent_queue._bridge_until_transfer(_Caller(), agent, "call-2"))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    await agent.hangup()
    assert await asyncio.wait_for(task, 2) is None


async def test_only_the_agent_on_the_call_may_transfer_it(runtime: Runtime, client: httpx.AsyncClient) -> None:
    desk = runtime.desk
    for name in ("ana", "eva"):
        await desk.auth.create_user(name, name.title(), ["agent_n1"], "clave-segura-1", level=1, skills=["general"])
    await desk.agents.set_presence("ana", "busy", actor="ivr", current="call:call-3")

    async def login(name: str) -> dict[str, str]:
        r = await client.post("/api/v1/auth/login", json={"username": name, "password": "clave-segura-1"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    r = await client.post("/api/v1/calls/call-3/transfer", json={"queue": "N2"}, headers=await login("eva"))
    assert r.status_code == 403, r.text
    r = await client.post("/api/v1/calls/call-3/transfer", json={"queue": "nowhere"}, headers=await login("ana"))
    assert r.status_code == 422, r.text
    r = await client.post("/api/v1/calls/call-3/transfer", json={"queue": "N2"}, headers=await login("ana"))
    assert r.status_code == 202, r.text
    assert await runtime.store.redis.get(runtime.store.keys.call_transfer("call-3")) == "N2"
