"""A caller being offered to an agent leaves the waiting set: the next caller's turn comes while the first talks
(before, the first caller stayed at the head for the whole call and nobody behind was offered to a free agent),
and the wallboard does not count a caller on a call as waiting. Nobody answered: back in their place."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from atiende.runtime import Runtime
from desk.models import Agent
from ivr.contact import Session
from ivr.hooks import QueuePlace
from telephony.errors import DialFailed

pytestmark = pytest.mark.anyio


class _Leg:
    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.call_id = "agent-leg"

    async def hangup(self, reason: str = "normal") -> None:
        self.ended.set()


class _CallerIO:
    """The caller's side of a bridge: it lasts until the agent's leg ends."""

    def __init__(self) -> None:
        self.call = _Leg()
        self.ended = False

    async def bridge(self, other: Any) -> None:
        await other.ended.wait()


class _Phones:
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.legs: list[_Leg] = []

    async def dial(self, uri: str, **kw: Any) -> _Leg:
        if not self.answer:
            raise DialFailed("no_answer")
        leg = _Leg()
        self.legs.append(leg)
        return leg


async def test_the_next_caller_is_offered_while_the_first_talks(runtime: Runtime) -> None:
    desk, r, k = runtime.desk, runtime.store.redis, runtime.store.keys
    for name in ("ana", "eva"):
        await desk.agents.upsert(Agent(id=name, name=name, level=1, skills=["general"], sip_uri=f"sip:{name}@127.0.0.1"))
        await desk.agents.set_presence(name, "available", actor="test")
    queue = runtime.agent_queue
    now = runtime.clock.now()
    await r.zadd(k.calls_waiting("N1"), {"call:a": 100.0, "call:b": 200.0})
    sessions = {c: Session(call_id=c, trace_id=c, channel="voice", caller="600000000", started_at=now) for c in "ab"}

    phones = _Phones(answer=True)
    first = asyncio.create_task(queue._offer(sessions["a"], _CallerIO(), QueuePlace("N1", "call:a", 1),  # type: ignore[arg-type]
                                             phones))  # type: ignore[arg-type]
    for _ in range(100):
        if phones.legs:
            break
        await asyncio.sleep(0.02)
    assert phones.legs, "the first caller's agent was never rung"
    assert await r.zrange(k.calls_waiting("N1"), 0, -1) == ["call:b"]  # b is at the head while a talks

    second = asyncio.create_task(queue._offer(sessions["b"], _CallerIO(), QueuePlace("N1", "call:b", 1),  # type: ignore[arg-type]
                                              phones))  # type: ignore[arg-type]
    for _ in range(100):
        if len(phones.legs) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(phones.legs) == 2 and await r.zcard(k.calls_waiting("N1")) == 0
    for leg in phones.legs:
        await leg.hangup()
    assert await asyncio.wait_for(first, 5) == "connected" and await asyncio.wait_for(second, 5) == "connected"


async def test_a_caller_nobody_answered_keeps_their_place(runtime: Runtime) -> None:
    desk, r, k = runtime.desk, runtime.store.redis, runtime.store.keys
    await desk.agents.upsert(Agent(id="ana", name="ana", level=1, skills=["general"], sip_uri="sip:ana@127.0.0.1"))
    await desk.agents.set_presence("ana", "available", actor="test")
    await r.zadd(k.calls_waiting("N1"), {"call:a": 100.0, "call:b": 200.0})
    session = Session(call_id="a", trace_id="a", channel="voice", caller="600000000", started_at=runtime.clock.now())
    got = await runtime.agent_queue._offer(session, _CallerIO(), QueuePlace("N1", "call:a", 1),  # type: ignore[arg-type]
                                           _Phones(answer=False))  # type: ignore[arg-type]
    assert got is None
    assert await r.zrange(k.calls_waiting("N1"), 0, -1, withscores=True) == [("call:a", 100.0), ("call:b", 200.0)]
