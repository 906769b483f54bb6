"""Supervisor listen / whisper / barge (issue 18.2) without SIP: the mixer's arithmetic and pacing, who hears whom
in each mode, and the API (roles, the supervisor's own phone, one supervisor at a time, audit). The real calls are
in tests/test_supervision_e2e.py."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from core.audio import FRAME_SAMPLES, SILENCE
from ivr.conference import recorded, routes
from telephony.mixer import MAX_DEPTH, Conference, _Ticker, mix
from telephony.rtp import MediaParams, RtpSession
from tests.conftest import STAFF_PASSWORD

pytestmark = pytest.mark.anyio


def level(value: int) -> bytes:
    return struct.pack(f"<{FRAME_SAMPLES}h", *([value] * FRAME_SAMPLES))


def value_of(frame: bytes) -> int:
    return struct.unpack_from("<h", frame)[0]


def session() -> RtpSession:
    return RtpSession(MediaParams(codec="PCMA", pt=8, dtmf_pt=101, remote=("127.0.0.1", 9)), tx_frames=3)


def test_mix_sums_with_saturation() -> None:
    assert mix([]) is None and mix([None, None]) is None
    assert value_of(mix([level(1000), level(-300)]) or b"") == 700
    assert value_of(mix([level(30000), level(30000)]) or b"") == 32767  # clipped, not wrapped to negative
    assert value_of(mix([level(-30000), level(-30000), None]) or b"") == -32768
    assert len(mix([level(5), b"\x01\x00"]) or b"") == 320  # a short frame is padded, not a crash


def test_routes_per_mode() -> None:
    c, a, s = "caller", "agent", "sup"
    assert routes(c, a, None, None) == {c: {a}, a: {c}}
    assert routes(c, a, s, "listen") == {c: {a}, a: {c}, s: {c, a}}
    assert routes(c, a, s, "whisper") == {c: {a}, a: {c, s}, s: {c, a}}
    assert routes(c, a, s, "barge") == {c: {a, s}, a: {c, s}, s: {c, a}}
    assert recorded(c, a, s, "whisper") == {c, a} and recorded(c, a, s, "barge") == {c, a, s}


async def test_each_leg_hears_what_its_mode_allows() -> None:
    legs = {name: session() for name in ("caller", "agent", "sup")}
    values = {"caller": 1000, "agent": 2000, "sup": 4000}
    conf = Conference("t")
    for name, rtp in legs.items():
        conf.add(name, rtp)
    taped: list[bytes] = []
    tap = conf.tap(["caller", "agent"], taped.append)
    expected = {"listen": {"caller": 2000, "agent": 1000, "sup": 3000},
                "whisper": {"caller": 2000, "agent": 5000, "sup": 3000},
                "barge": {"caller": 6000, "agent": 5000, "sup": 3000}}
    for mode, want in expected.items():
        for leg, hears in routes("caller", "agent", "sup", mode).items():  # type: ignore[arg-type]
            conf.route(leg, hears)
        conf.retap(tap, recorded("caller", "agent", "sup", mode))  # type: ignore[arg-type]
        for _ in range(3):
            for name, rtp in legs.items():
                rtp.frames_in.put_nowait(level(values[name]))
            conf.tick()
        for name, rtp in legs.items():
            got = [value_of(rtp.frames_out.get_nowait()) for _ in range(rtp.frames_out.qsize())]
            assert got and set(got) == {want[name]}, (mode, name, got)
        assert value_of(taped[-1]) == (7000 if mode == "barge" else 3000)
    conf.remove("sup")
    assert "sup" not in conf.hears("caller") | conf.hears("agent")


async def test_jitter_lone_frames_and_backlog() -> None:
    a, b = session(), session()
    conf = Conference("j")
    conf.add("a", a, ["b"])
    conf.add("b", b, ["a"])
    conf.tick()  # nothing received: nothing sent (the sender sends silence by itself)
    assert b.frames_out.empty() and a.frames_out.empty()
    a.frames_in.put_nowait(level(100))  # a lone frame after silence waits one tick, then goes on its own
    conf.tick()
    assert b.frames_out.empty()
    conf.tick()
    assert value_of(b.frames_out.get_nowait()) == 100
    for i in range(20):  # a burst after a stall: the oldest beyond MAX_DEPTH go, latency stays bounded
        a.frames_in.put_nowait(level(i))
    conf.tick()
    assert a.frames_in.qsize() == MAX_DEPTH - 1 and value_of(b.frames_out.get_nowait()) == 20 - MAX_DEPTH


async def test_one_ticker_for_every_conference_and_none_left_behind() -> None:
    confs = [Conference(str(i)) for i in range(3)]
    for c in confs:
        c.add("x", session(), [])
        c.start()
    ticker = _Ticker.of(asyncio.get_running_loop())
    await asyncio.sleep(0.25)
    # One ticker drives them all (the 20 ms rate and its jitter are bench figures, not asserted here).
    ticks = [c.ticks for c in confs]
    assert ticks[0] >= 2 and max(ticks) - min(ticks) <= 1, ticks
    for c in confs:
        c.close()
    assert ticker.task is None and ticker.conferences == []
    assert SILENCE == level(0)


# ---- the API ---------------------------------------------------------------------------------------------------


async def _login(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"username": user, "password": STAFF_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def _live_call(runtime: Runtime, call_id: str, agent: str = "ana", **extra: Any) -> None:
    store = runtime.store
    doc = {"call_id": call_id, "queue": "N1", "agent": agent, "since": "2026-11-23T10:00:00+01:00", "since_ts": 1.0,
           "recording": False, **extra}
    await store.redis.set(store.keys.call_live(call_id), json.dumps(doc), ex=30)
    await store.redis.zadd(store.keys.calls_live, {call_id: 1.0})


async def test_supervise_rings_the_supervisors_own_phone_and_is_audited(
        runtime: Runtime, client: httpx.AsyncClient, staff: dict[str, str]) -> None:
    desk, store = runtime.desk, runtime.store
    await desk.auth.create_user("sara", "Sara", ["supervisor"], STAFF_PASSWORD, level=2, skills=["general"],
                                sip_uri="sip:sara@127.0.0.1:5092")
    await desk.auth.create_user("rosa", "Rosa", ["supervisor"], STAFF_PASSWORD, level=2, skills=["general"],
                                sip_uri="sip:rosa@127.0.0.1:5093")
    sara, rosa, ana = await _login(client, "sara"), await _login(client, "rosa"), await _login(client, "ana")
    await _live_call(runtime, "c-1")
    await store.redis.zadd(store.keys.calls_live, {"c-gone": 0.5})  # its node stopped refreshing it

    listed = (await client.get("/api/v1/calls/live", headers=sara)).json()["calls"]
    assert [c["call_id"] for c in listed] == ["c-1"] and "since_ts" not in listed[0]
    assert await store.redis.zscore(store.keys.calls_live, "c-gone") is None  # pruned
    assert (await client.get("/api/v1/calls/live", headers=ana)).status_code == 403
    assert (await client.post("/api/v1/calls/c-1/supervise", headers=ana, json={"mode": "listen"})).status_code == 403

    r = await client.post("/api/v1/calls/c-1/supervise", headers=sara, json={"mode": "listen",
                                                                           "uri": "sip:premium@evil.example"})
    assert r.status_code == 202, r.text
    want = json.loads(str(await store.redis.get(store.keys.call_supervise("c-1"))))
    assert want["uri"] == "sip:sara@127.0.0.1:5092" and want["mode"] == "listen" and want["supervisor"] == "user:sara"
    first_id = want["id"]
    r = await client.post("/api/v1/calls/c-1/supervise", headers=sara, json={"mode": "barge"})
    want = json.loads(str(await store.redis.get(store.keys.call_supervise("c-1"))))
    assert r.status_code == 202 and want["mode"] == "barge" and want["id"] != first_id
    # one supervisor at a time
    r = await client.post("/api/v1/calls/c-1/supervise", headers=rosa, json={"mode": "listen"})
    assert r.status_code == 409 and r.json()["error_id"] == "already-supervised"
    # bad input loses nothing
    for body in ({"mode": "shout"}, {}, {"mode": None}):
        assert (await client.post("/api/v1/calls/c-1/supervise", headers=sara, json=body)).status_code == 422
    assert (await client.post("/api/v1/calls/no-such/supervise", headers=sara, json={"mode": "listen"})).json()[
        "error_id"] == "call-not-live"
    assert (await client.post("/api/v1/calls/%0a%20x/supervise", headers=sara, json={"mode": "listen"})).status_code == 422
    assert json.loads(str(await store.redis.get(store.keys.call_supervise("c-1"))))["mode"] == "barge"
    r = await client.post("/api/v1/calls/c-1/supervise", headers=sara, json={"mode": "off"})
    assert r.status_code == 202 and await store.redis.get(store.keys.call_supervise("c-1")) is None

    actions = [(e["actor"], e["action"], e["target"]) for e in await desk.audit.entries(count=50)]
    assert actions.count(("user:sara", "call.supervise", "c-1")) == 3


async def test_a_supervisor_without_a_phone_or_on_their_own_call_is_refused(
        runtime: Runtime, client: httpx.AsyncClient, staff: dict[str, str]) -> None:
    await _live_call(runtime, "c-2", agent="sara")
    await runtime.desk.auth.create_user("sara", "Sara", ["supervisor"], STAFF_PASSWORD, level=2, skills=["general"],
                                        sip_uri="sip:sara@127.0.0.1:5092")
    sup = await _login(client, "supervisora")  # no agent record: nowhere to ring
    r = await client.post("/api/v1/calls/c-2/supervise", headers=sup, json={"mode": "listen"})
    assert r.status_code == 409 and r.json()["error_id"] == "no-phone"
    r = await client.post("/api/v1/calls/c-2/supervise", headers=await _login(client, "sara"), json={"mode": "listen"})
    assert r.status_code == 403 and r.json()["error_id"] == "own-call"


class _AgentLeg:
    call_id = "agent-leg"
    ended = asyncio.Event()


async def test_a_supervisor_on_a_call_is_offered_no_caller_and_comes_back_as_they_were(
        runtime: Runtime, staff: dict[str, str]) -> None:
    """While the supervisor's phone rings or is in the call, their agent record is busy: the queue would ring a
    phone that cannot answer and set them away. Afterwards they are available again, unless they changed their
    presence meanwhile."""
    from atiende.wiring import DeskAgents
    from ivr.conference import BridgeControl

    desk, store = runtime.desk, runtime.store
    await desk.auth.create_user("sara", "Sara", ["supervisor"], STAFF_PASSWORD, level=2, skills=["general"],
                                sip_uri="sip:sara@127.0.0.1:5092")
    await desk.agents.set_presence("sara", "available", actor="test")
    events: list[dict[str, Any]] = []

    async def publish(ev: dict[str, Any]) -> None:
        events.append(ev)

    def control(call_id: str) -> BridgeControl:
        return BridgeControl(store=store, clock=runtime.clock, dialer=None, call_id=call_id, trace_id="t",
                             caller=None, agent=_AgentLeg(), live={}, ring_timeout_s=1.0,  # type: ignore[arg-type]
                             publish=publish, agents=DeskAgents(desk, lambda: runtime.settings.agents.softphone))

    async def supervise(c: BridgeControl, request_id: str) -> None:
        want = {"id": request_id, "mode": "listen", "supervisor": "user:sara", "agent_id": "sara",
                "uri": "sip:sara@127.0.0.1:5092"}
        await store.redis.set(store.keys.call_supervise(c.call_id), json.dumps(want))
        await c.supervise(want)

    c = control("c-9")
    await supervise(c, "r1")
    sara = await desk.agents.get("sara")
    assert (sara.presence, sara.current) == ("busy", "supervise:c-9")
    assert await desk.assign.reserve("N1", item="c-other") is None  # nobody else is free, and not sara
    assert c.dialing is not None
    await c.dialing  # no bridge here: the ring gives up at once, as a phone that does not answer
    await c.poll_dial()
    sara = await desk.agents.get("sara")
    assert (sara.presence, sara.current) == ("available", None)
    assert await store.redis.get(store.keys.call_supervise("c-9")) is None

    c = control("c-10")
    await supervise(c, "r2")
    await desk.agents.set_presence("sara", "away", actor="user:sara")  # she went for a coffee meanwhile
    await c.close(None)
    assert (await desk.agents.get("sara")).presence == "away"


class _FullDisk:
    def writeframesraw(self, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        raise OSError(28, "No space left on device")


async def test_a_recording_that_cannot_be_written_stops_but_the_call_goes_on(runtime: Runtime, tmp_path: Any) -> None:
    """A full disk or a lost mount raised out of the bridge's poll loop, which then cut caller and agent."""
    from ivr.conference import BridgeControl, Recorder

    store = runtime.store
    events: list[dict[str, Any]] = []

    async def publish(ev: dict[str, Any]) -> None:
        events.append(ev)

    c = BridgeControl(store=store, clock=runtime.clock, dialer=None, call_id="c-rec", trace_id="t", caller=None,
                      agent=_AgentLeg(), live={}, ring_timeout_s=1.0, publish=publish)  # type: ignore[arg-type]
    rec = Recorder(tmp_path, "rec-" + "1" * 20)
    rec._wav = _FullDisk()  # type: ignore[assignment]
    rec.sink(SILENCE)
    c.recorder, c.recording_meta = rec, {"id": rec.recording_id, "call_id": "c-rec", "state": "recording"}
    await c.recording_state(None)  # the poll loop's call: must not raise
    assert c.recorder is None
    meta = json.loads(str(await store.redis.get(store.keys.call_recording(rec.recording_id))))
    assert meta["state"] == "failed" and "No space" in meta["error"]
    assert events and events[-1].get("failed") is True
    await c.close(None)  # and the call's end still tidies up


class _SupervisorLeg:
    def __init__(self) -> None:
        self.call_id = "sup-leg"
        self.ended = asyncio.Event()

    async def hangup(self, reason: str = "normal") -> None:
        self.ended.set()


def _control(runtime: Runtime, events: list[dict[str, Any]], dialer: Any = None) -> Any:
    from ivr.conference import BridgeControl

    async def publish(ev: dict[str, Any]) -> None:
        events.append(ev)

    return BridgeControl(store=runtime.store, clock=runtime.clock, dialer=dialer, call_id="c-s", trace_id="t",
                         caller=None, agent=_AgentLeg(), live={"agent": "ana"}, ring_timeout_s=1.0,  # type: ignore[arg-type]
                         publish=publish)


async def test_the_agent_is_told_when_the_supervisor_leaves(runtime: Runtime) -> None:
    """The desk withholds events without an `agent` from agents: "Supervisión: le habla a usted" stayed up."""
    from desk.events import EventView, visible

    ana = EventView(everything=False, principal="user:ana", agent="ana", queues=frozenset({"N1"}))
    luis = EventView(everything=False, principal="user:luis", agent="luis", queues=frozenset({"N1"}))
    events: list[dict[str, Any]] = []
    c = _control(runtime, events)
    for how in ("hung up", "withdrawn"):  # the supervisor's phone hangs up; the supervisor stops from the wallboard
        leg = _SupervisorLeg()
        c.supervisor, c.supervisor_id, c.mode = leg, "user:sara", "whisper"
        if how == "hung up":
            leg.ended.set()
        await c.supervise(None)
        left = [e for e in events if e["type"] == "call.supervision" and e["state"] == "left"]
        assert len(left) == (1 if how == "hung up" else 2), (how, events)
        assert visible(ana, left[-1]) and not visible(luis, left[-1]), left[-1]
    await c.close(None)


class _NoRtpPort:
    async def dial(self, uri: str, **kw: Any) -> Any:
        raise OSError("no free RTP port")


async def test_a_supervisor_dial_that_fails_tells_the_supervisor(runtime: Runtime) -> None:
    """Only DialFailed said no_answer: an OSError (no RTP port) or a call without a bridge left the supervisor's
    panel waiting, and the dial task's exception was never retrieved."""
    from desk.events import EventView, visible

    ana = EventView(everything=False, principal="user:ana", agent="ana", queues=frozenset({"N1"}))
    want = {"id": "r1", "mode": "listen", "supervisor": "user:sara", "uri": "sip:sara@127.0.0.1:5092"}
    for conference in (Conference("c-s"), None):
        events: list[dict[str, Any]] = []
        c = _control(runtime, events, dialer=_NoRtpPort())
        c.conference = conference
        await runtime.store.redis.set(runtime.store.keys.call_supervise("c-s"), json.dumps(want))
        await c.supervise(want)
        assert c.dialing is not None
        await c.dialing  # nothing raised out of the dial task
        assert [e["state"] for e in events] == ["ringing", "no_answer"], (conference, events)
        assert events[-1]["supervisor"] == "user:sara" and visible(ana, events[-1])
        await c.poll_dial()  # the request is forgotten: asking again rings again
        assert c.dialing is None and await runtime.store.redis.get(runtime.store.keys.call_supervise("c-s")) is None
        await c.close(None)


async def test_a_leaving_supervisor_deletes_only_their_own_request(runtime: Runtime) -> None:
    """Reading the request and deleting it in two steps lost a request another supervisor wrote in between."""
    import json

    events: list[dict[str, Any]] = []
    c = _control(runtime, events)
    key = runtime.store.keys.call_supervise("c-s")
    c.applied = "req-sara"
    await runtime.store.redis.set(key, json.dumps({"id": "req-rosa", "mode": "listen", "supervisor": "user:rosa"}))
    await c._forget_request()
    assert json.loads(await runtime.store.redis.get(key))["id"] == "req-rosa"  # rosa's request stays
    await runtime.store.redis.set(key, json.dumps({"id": "req-sara", "mode": "listen", "supervisor": "user:sara"}))
    await c._forget_request()
    assert await runtime.store.redis.get(key) is None  # sara's own is gone: a new request will ring again
    await runtime.store.redis.set(key, "not json")
    await c._forget_request()  # a damaged entry is left alone, without an error
    await c.close(None)
