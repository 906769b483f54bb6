"""A call bridged to an agent goes on whatever the store or the bridge's controls do: only its legs end it.

A Redis that answers but refuses writes (NOREPLICAS under min-replicas-to-write, OOM under noeviction, MISCONF)
raises ResponseError, which is not a connection error: it ended the bridge's poll loop, and with it the agent's
and the citizen's calls. So did any error out of supervision or the recording. The refusing Redis here is a
private server, so the session's shared one never carries the setting.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from atiende.runtime import Runtime
from config.loader import Loaded
from core.clock import FixedClock
from core.redis_server import PrivateRedis
from core.store import Store
from ivr import distribution
from ivr.conference import BridgeControl
from ivr.distribution import Transfer

pytestmark = pytest.mark.anyio


class _AgentLeg:
    def __init__(self) -> None:
        self.call_id = "agent-leg"
        self.ended = asyncio.Event()
        self.hangups = 0

    async def hangup(self, reason: str = "normal") -> None:
        self.hangups += 1
        self.ended.set()


class _Caller:
    """The caller's side of the bridge: relays until the agent's leg ends."""

    def __init__(self) -> None:
        self.relaying = False

    async def bridge(self, other: _AgentLeg) -> None:
        self.relaying = True
        try:
            await other.ended.wait()
        finally:
            self.relaying = False


async def _first(task: asyncio.Task[Any], condition: Awaitable[Any], what: str) -> None:
    """Wait until `condition` holds or the bridge ends, whichever comes first (the latter is the failure)."""
    cond = asyncio.ensure_future(condition)
    try:
        await asyncio.wait([task, cond], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cond.cancel()
    assert not task.done(), f"the bridge ended before {what}: {task.exception() if not task.cancelled() else None!r}"
    assert cond.done() and not cond.cancelled(), f"{what}: never happened"


@pytest.fixture
async def refusing(loaded: Loaded, clock: FixedClock, tmp_path: Path) -> AsyncIterator[tuple[Runtime, PrivateRedis]]:
    server = PrivateRedis(tmp_path / "redis", password="")
    server.start()
    store = Store(server.url, prefix=f"t{uuid.uuid4().hex[:10]}")
    data = loaded.settings.model_copy(deep=True)
    data.service.data_dir = tmp_path / "var"
    try:
        yield Runtime(Loaded(settings=data, version=loaded.version, document=loaded.document), store=store,
                      clock=clock), server
    finally:
        await store.close()
        server.stop()


async def test_a_store_refusing_writes_does_not_end_a_bridged_call(
        refusing: tuple[Runtime, PrivateRedis], monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, _server = refusing
    monkeypatch.setattr(distribution, "TRANSFER_POLL_S", 0.01)
    r, k = runtime.store.redis, runtime.store.keys
    # No replica, at least one required: every write (GETDEL, SET, ZADD, XADD) is refused with NOREPLICAS.
    await r.config_set("min-replicas-to-write", 1)
    caller, agent = _Caller(), _AgentLeg()
    task = asyncio.create_task(runtime.agent_queue._bridge_until_transfer(
        caller, agent, "call-nr", queue="N1", agent_id="ana"))  # type: ignore[arg-type]

    async def refused_polls(n: int) -> None:
        while True:
            stats: Any = await r.info("commandstats")
            if int(stats.get("cmdstat_getdel", {}).get("rejected_calls", 0)) >= n:
                return
            await asyncio.sleep(0.01)

    try:
        await _first(task, refused_polls(3), "three polls were refused")
        assert caller.relaying and agent.hangups == 0  # the conversation goes on
    finally:
        await r.config_set("min-replicas-to-write", 0)
    # The store takes writes again: the agent's transfer, waiting meanwhile, now reaches the call.
    await r.set(k.call_transfer("call-nr"), "N2")
    assert await asyncio.wait_for(task, 30) == Transfer(queue="N2")
    assert agent.hangups == 1 and await r.exists(k.call_live("call-nr")) == 0


async def test_a_fault_in_supervision_or_the_recording_does_not_end_a_bridged_call(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distribution, "TRANSFER_POLL_S", 0.01)
    calls = {"supervise": 0, "recording_state": 0}
    both_failed_twice = asyncio.Event()

    def broken(name: str) -> Any:
        async def fail(self: BridgeControl, want: Any) -> None:
            calls[name] += 1
            if min(calls.values()) >= 2:
                both_failed_twice.set()
            raise RuntimeError(f"{name} broke")
        return fail

    monkeypatch.setattr(BridgeControl, "supervise", broken("supervise"))
    monkeypatch.setattr(BridgeControl, "recording_state", broken("recording_state"))
    caller, agent = _Caller(), _AgentLeg()
    task = asyncio.create_task(runtime.agent_queue._bridge_until_transfer(
        caller, agent, "call-bug", queue="N1", agent_id="ana"))  # type: ignore[arg-type]
    await _first(task, both_failed_twice.wait(), "supervision and recording failed twice each")
    assert caller.relaying and agent.hangups == 0
    await agent.hangup()  # the agent ends the call: the bridge ends as it always does
    assert await asyncio.wait_for(task, 30) is None
