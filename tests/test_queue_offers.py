"""A caller being offered to an agent leaves the waiting set: the next caller's turn comes while the first talks
(before, the first caller stayed at the head for the whole call and nobody behind was offered to a free agent),
and the wallboard does not count a caller on a call as waiting. Nobody answered: back in their place."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from atiende.runtime import Runtime
from core.clock import FixedClock
from desk.models import Agent
from ivr.contact import CallerGone, Session
from ivr.hooks import QueuePlace
from ivr.textio import ScriptedIO
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


async def _agent_call(runtime: Runtime, session: Session, item: str) -> object:
    """An offer the agent's phone answers, then hangs up: what _offer returns."""
    phones = _Phones(answer=True)
    offer = asyncio.create_task(runtime.agent_queue._offer(session, _CallerIO(), QueuePlace("N1", item, 1),  # type: ignore[arg-type]
                                                           phones))  # type: ignore[arg-type]
    for _ in range(100):
        if phones.legs:
            break
        await asyncio.sleep(0.02)
    await phones.legs[0].hangup()
    return await asyncio.wait_for(offer, 5)


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


class _HangsUpOnTheAnnouncement(ScriptedIO):
    async def say(self, text: str, **kw: Any) -> None:
        if "no cuelgue" in text:
            self._ended = True
            raise CallerGone()
        await super().say(text, **kw)


async def test_a_caller_who_hangs_up_during_the_announcement_leaves_the_queue(runtime: Runtime,
                                                                              clock: FixedClock) -> None:
    """They never reached wait(), whose cleanup took them out: left at the head, they blocked everyone behind."""
    io = _HangsUpOnTheAnnouncement([("say", "quiero hablar con una persona")], clock=clock)
    session = await runtime.ivr.run(io)
    assert session.queue == "N1"
    r, k = runtime.store.redis, runtime.store.keys
    assert await r.zcard(k.calls_waiting("N1")) == 0
    assert await r.exists(k.call_waiting_alive(f"call:{session.call_id}")) == 0


class _Waiting:
    """A caller on hold (not a SIP call, so never offered): hangs up after a few polls."""

    channel = "voice"

    def __init__(self, polls: int) -> None:
        self.polls = polls
        self.ended = False

    async def hold(self, seconds: float) -> bool:
        await asyncio.sleep(0.01)
        self.polls -= 1
        self.ended = self.polls <= 0
        return not self.ended

    async def say(self, text: str, **kw: Any) -> None:
        return None


async def test_a_waiting_caller_of_a_node_that_died_is_dropped_from_the_head(runtime: Runtime) -> None:
    r, k = runtime.store.redis, runtime.store.keys
    await r.zadd(k.calls_waiting("N1"), {"call:of-a-dead-node": 1.0})  # its node no longer refreshes it
    await r.zadd(k.calls_waiting("N1"), {"call:alive-elsewhere": 2.0})
    await r.set(k.call_waiting_alive("call:alive-elsewhere"), "1", ex=60)
    session = Session(call_id="b", trace_id="b", channel="voice", caller="600000000", started_at=runtime.clock.now())
    queue = runtime.agent_queue
    place = await queue.enqueue(session, "N1")
    assert place.position == 3
    got = await queue.wait(session, _Waiting(polls=3), place, 60)  # type: ignore[arg-type]
    assert got == "hangup"
    assert await r.zrange(k.calls_waiting("N1"), 0, -1) == ["call:alive-elsewhere"]  # and ours left when done


class _BrokenLine:
    async def dial(self, uri: str, **kw: Any) -> _Leg:
        raise OSError("no free RTP port")


class _RingsUntilTheCallerLeaves:
    def __init__(self, caller: _CallerIO) -> None:
        self.caller = caller

    async def dial(self, uri: str, **kw: Any) -> _Leg:
        self.caller.ended = True
        self.caller.call.ended.set()
        await asyncio.sleep(30)
        raise AssertionError("the ring should have been cancelled")


@pytest.mark.parametrize("case", ["our_failure", "caller_left"])
async def test_an_offer_that_fails_on_our_side_or_the_callers_does_not_set_the_agent_away(
        runtime: Runtime, case: str) -> None:
    """RONA is for an agent who lets it ring out; a line without RTP ports, a DNS failure or a caller hanging up
    while the phone rings left the agent away (or reserved for good, for an exception other than DialFailed)."""
    desk = runtime.desk
    await desk.agents.upsert(Agent(id="ana", name="ana", level=1, skills=["general"], sip_uri="sip:ana@127.0.0.1"))
    await desk.agents.set_presence("ana", "available", actor="test")
    io = _CallerIO()
    phones: Any = _BrokenLine() if case == "our_failure" else _RingsUntilTheCallerLeaves(io)
    session = Session(call_id="a", trace_id="a", channel="voice", caller="600000000", started_at=runtime.clock.now())
    got = await runtime.agent_queue._offer(session, io, QueuePlace("N1", "call:a", 1), phones)  # type: ignore[arg-type]
    assert got == (None if case == "our_failure" else "hangup")
    ana = await desk.agents.get("ana")
    assert (ana.presence, ana.current) == ("available", None)


async def test_the_wrap_up_release_does_not_undo_a_later_presence(runtime: Runtime) -> None:
    """The wrap-up timer released the agent whatever they did meanwhile: available again and offered a second
    caller while on another call."""
    desk = runtime.desk
    runtime.settings.agents.wrap_up_s = 0.2
    await desk.agents.upsert(Agent(id="ana", name="ana", level=1, skills=["general"], sip_uri="sip:ana@127.0.0.1"))
    await desk.agents.set_presence("ana", "available", actor="test")
    session = Session(call_id="a", trace_id="a", channel="voice", caller="600000000", started_at=runtime.clock.now())
    assert await _agent_call(runtime, session, "call:a") == "connected"
    assert (await desk.agents.get("ana")).current == "call:a"  # wrap-up
    await desk.agents.set_presence("ana", "busy", actor="ivr", current="call:b")  # back early, took another call
    await asyncio.sleep(0.5)
    ana = await desk.agents.get("ana")
    assert (ana.presence, ana.current) == ("busy", "call:b")


async def test_the_callers_ticket_links_the_agent_call(runtime: Runtime, clock: FixedClock) -> None:
    """The desk shows a call's recordings from the ticket's interactions: the ticket the IVR files for a call
    carries the call's id, and an agent call adds an interaction with the agent and its recordings."""
    io = ScriptedIO([("say", "quiero poner una queja"), ("say", "el autobús nunca llega a su hora"), ("say", "no")],
                    clock=clock)
    session = await runtime.ivr.run(io)
    assert session.ticket_ref, [m.text for m in io.out]
    ticket = await runtime.desk.tickets.get(session.ticket_ref)
    assert ticket.meta.get("call_id") == session.call_id
    first = (await runtime.desk.tickets.interactions(session.ticket_ref))[0]
    assert first.data.get("call_id") == session.call_id

    desk = runtime.desk
    await desk.agents.upsert(Agent(id="ana", name="ana", level=1, skills=["general"], sip_uri="sip:ana@127.0.0.1"))
    await desk.agents.set_presence("ana", "available", actor="test")
    session.vars["recordings"] = ["rec-" + "d" * 20]
    assert await _agent_call(runtime, session, "call:x") == "connected"
    calls = [i for i in await desk.tickets.interactions(session.ticket_ref) if i.actor == "agent:ana"]
    assert [(i.kind, i.data["call_id"], i.data["recordings"]) for i in calls] == [
        ("call", session.call_id, ["rec-" + "d" * 20])]
