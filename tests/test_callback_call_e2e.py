"""Click-to-call from the desk (issue 21), with real SIP parties over loopback in a network namespace: the agent's
phone and the citizen's phone are baresip, the line is Atiende's SIP endpoint with a trunk, the API is the app over
ASGI. No speech models: the line's IVR is not needed to call out.

Atiende rings the agent first and dials the citizen's stored number only once the agent answered; both hear each
other (checked by correlation); the outcome is the callback's attempt and is on the ticket; refusals (another
agent's callback, a second call at once, a number the policy blocks) dial nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from atiende.runtime import Runtime
from desk.models import Agent
from tests.atiende_line import login
from tests.conftest import STAFF_PASSWORD
from tests.sip_harness import HarnessError, correlate, espeak_wav, pad_wav, read_wav, tone_wav

pytest_plugins = ["tests.sip_harness", "tests.atiende_line"]
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

HEARD = 0.35
CITIZEN = "+34600111333"


@dataclass
class Setup:
    rt: Runtime
    api: httpx.AsyncClient
    ana: Any  # the agent's phone (answers)
    citizen: Any  # the citizen's phone, reached through the trunk
    refs: dict[str, np.ndarray]
    sip_endpoint: Any  # the harness's factories, for a test's extra parties
    baresips: Any


@pytest.fixture
async def setup(runtime: Runtime, netns_redis: str, sip_endpoint: Any, baresips: Any,
                tmp_path: Path) -> AsyncIterator[Setup]:
    rt = runtime
    rt.settings.agents.ring_timeout_s = 3.0
    rt.settings.voicemail.dial_ring_timeout_s = 5.0
    refs = {"agent": read_wav(espeak_wav("Le llamo del ayuntamiento por su mensaje.", tmp_path / "a.wav", "es+f3")),
            "citizen": read_wav(espeak_wav("Sí, dígame, estaba esperando su llamada.", tmp_path / "c.wav",
                                           speed=165))}
    ana = await baresips(user="ana", answer="auto", wav=pad_wav(tmp_path / "a.wav", tmp_path / "ap.wav", 0.3, 60))
    citizen = await baresips(user=CITIZEN, answer="auto",
                             wav=pad_wav(tmp_path / "c.wav", tmp_path / "cp.wav", 0.8, 60))

    async def refuse(call: Any) -> None:
        await call.reject(603)

    line = await sip_endpoint(refuse, port=5064, rtp_port_min=21100, rtp_port_max=21199,
                              trunk={"proxy": f"sip:127.0.0.1:{citizen.sip_port}"})
    rt.attach_line(line)
    desk: Any = rt.desk
    for user, uri in (("ana", ana.aor), ("luis", None)):
        await desk.auth.create_user(user, user.title(), ["agent_n1"], STAFF_PASSWORD, level=1, skills=["general"],
                                    sip_uri=uri)
        await desk.agents.upsert(Agent(id=user, name=user.title(), level=1, skills=["general"], sip_uri=uri))
        await desk.agents.set_presence(user, "available", actor="test")
    from desk_api.app import create_app

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://t") as api:
        yield Setup(rt, api, ana, citizen, refs, sip_endpoint, baresips)
    await rt.callback_calls.stop()
    rt.attach_line(None)


async def _callback(s: Setup, phone: str, who: dict[str, str]) -> tuple[str, str]:
    """A voicemail ticket with a due callback, claimed by `who`: (callback id, ticket ref)."""
    desk: Any = s.rt.desk
    ticket = await desk.tickets.create(channel="phone", queue="N1", subject="Mensaje de voz", kind="voicemail",
                                       body="llámenme", actor="ivr")
    cb = await s.rt.callbacks.create(phone=phone, ticket_ref=ticket.ref, due_at=s.rt.clock.now())
    res = await s.api.post(f"/api/v1/callbacks/{cb.id}/claim", headers=who)
    assert res.status_code == 200, res.text
    return cb.id, str(ticket.ref)


async def _ended(s: Setup, cb_id: str, who: dict[str, str], within: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = (await s.api.get(f"/api/v1/callbacks/{cb_id}/call", headers=who)).json()
        if doc.get("state") == "ended":
            return doc
        await asyncio.sleep(0.2)
    raise HarnessError(f"the call about {cb_id} did not end: {doc}")


async def test_the_agent_answers_then_the_citizen_and_both_are_bridged(setup: Setup) -> None:
    s, desk = setup, setup.rt.desk
    ana, luis = await login(s.api, "ana"), await login(s.api, "luis")
    cb_id, ref = await _callback(s, "600 111 333", ana)
    other_id, _ = await _callback(s, "600 111 444", ana)

    res = await s.api.post(f"/api/v1/callbacks/{cb_id}/call", headers=luis)
    assert res.status_code == 403 and res.json()["error_id"] == "not-your-callback", res.text
    assert (await s.api.post("/api/v1/callbacks/nope/call", headers=ana)).status_code == 404
    s.rt.settings.agents.wrap_up_s = 2.0
    res = await s.api.post(f"/api/v1/callbacks/{cb_id}/call", headers=ana)
    assert res.status_code == 202, res.text
    assert res.json()["state"] == "ringing_agent" and res.json()["agent"] == "ana"
    again = await s.api.post(f"/api/v1/callbacks/{cb_id}/call", headers=ana)
    assert again.status_code == 409 and again.json()["error_id"] == "callback-call-in-progress", again.text
    second = await s.api.post(f"/api/v1/callbacks/{other_id}/call", headers=ana)  # one call per agent
    assert second.status_code == 409 and second.json()["error_id"] == "agent-busy", second.text

    await s.ana.wait_event("CALL_ESTABLISHED", within=15)
    await s.citizen.wait_event("CALL_ESTABLISHED", within=15)
    agent = await desk.agents.get("ana")
    assert agent.presence == "busy" and str(agent.current).startswith("callback-call:")  # no queued call offered
    state = (await s.api.get(f"/api/v1/callbacks/{cb_id}/call", headers=ana)).json()
    assert state["state"] == "connected", state
    await asyncio.sleep(4.5)
    await s.citizen.hangup()
    done = await _ended(s, cb_id, ana)
    assert done["outcome"] == "reached", done
    assert (await desk.agents.get("ana")).presence == "busy"  # wrap-up, as after a queued call
    await s.ana.wait_event("CALL_CLOSED", within=10)
    await s.citizen.wait_event("CALL_CLOSED", within=10)

    cb = await s.rt.callbacks.get(cb_id)
    assert cb.status == "done" and cb.attempts[-1].outcome == "reached" and cb.attempts[-1].actor == "user:ana"
    noted = [i for i in await desk.tickets.interactions(ref) if i.kind == "callback_attempt"]
    assert noted and noted[-1].data["outcome"] == "reached" and noted[-1].actor == "agent:ana"
    record = await s.rt.calls.get(done["id"])
    assert record.vars["agent"] == "ana" and record.caller == CITIZEN and record.ended_at is not None
    audit = await s.rt.store.redis.xrange(s.rt.store.keys.audit)
    assert any(fields.get("action") == "callback.call" for _, fields in audit), audit[-3:]
    await _presence(s, "ana", "available")
    await desk.auth.create_api_key("t-admin", ["admin"], key="t-admin-key-0123456789")
    report = (await s.api.get("/api/v1/calls/containment", headers={"X-API-Key": "t-admin-key-0123456789"})).json()
    assert report["calls"] == 0, report  # an outbound call is no contact the IVR served

    agent_heard, citizen_heard = read_wav(s.ana.recordings()[0]), read_wav(s.citizen.recordings()[0])
    to_agent, to_citizen = correlate(s.refs["citizen"], agent_heard), correlate(s.refs["agent"], citizen_heard)
    print(f"agent heard the citizen: {to_agent}; the citizen heard the agent: {to_citizen}")
    assert to_agent.score > HEARD and to_citizen.score > HEARD, (str(to_agent), str(to_citizen))


async def test_nothing_is_dialled_unless_the_agent_answers_and_the_policy_allows(setup: Setup,
                                                                               tmp_path: Path) -> None:
    s, desk = setup, setup.rt.desk
    ana, luis = await login(s.api, "ana"), await login(s.api, "luis")
    # luis's phone rings and is never answered: nothing is dialled, the callback stays his
    silent = await s.baresips(user="luis", answer="manual", wav=tone_wav(tmp_path / "t.wav", 30))
    await desk.agents.upsert(Agent(id="luis", name="Luis", level=1, skills=["general"], sip_uri=silent.aor))
    cb_id, _ = await _callback(s, "600 111 333", luis)
    assert (await s.api.post(f"/api/v1/callbacks/{cb_id}/call", headers=luis)).status_code == 202
    await silent.wait_event("CALL_INCOMING", within=10)
    done = await _ended(s, cb_id, luis)
    assert done["ending"] == "agent_no_answer" and done["outcome"] is None, done
    cb = await s.rt.callbacks.get(cb_id)
    assert cb.status == "in_progress" and cb.claimed_by == "user:luis" and cb.attempts == []
    assert s.citizen.count("CALL_INCOMING") == 0
    assert (await desk.agents.get("luis")).presence == "available"

    # a number the policy blocks now (it was allowed when the callback was made): refused, nothing rings
    blocked_id, _ = await _callback(s, "912 345 678", ana)
    s.rt.settings.voicemail.callback_blocked = [*s.rt.settings.voicemail.callback_blocked, "geographic"]
    res = await s.api.post(f"/api/v1/callbacks/{blocked_id}/call", headers=ana)
    assert res.status_code == 422 and res.json()["error_id"] == "phone-not-allowed", res.text
    assert s.ana.count("CALL_INCOMING") == 0 and (await desk.agents.get("ana")).presence == "available"

    # the carrier's side of the trunk: the citizen's phone rings (until the agent gives up), then it is busy
    busy = asyncio.Event()

    async def carrier(call: Any) -> None:
        if busy.is_set():
            await call.reject(486)
        else:
            await asyncio.wait_for(call.ended.wait(), 20)

    async def refuse(call: Any) -> None:
        await call.reject(603)

    await s.sip_endpoint(carrier, port=5066, rtp_port_min=21200, rtp_port_max=21299)
    s.rt.attach_line(await s.sip_endpoint(refuse, port=5068, rtp_port_min=21300, rtp_port_max=21399,
                                          trunk={"proxy": "sip:127.0.0.1:5066"}))
    # ana answers, then hangs up while the citizen's phone rings: a no_answer attempt, not a silent one
    rang_id, _ = await _callback(s, "600 111 666", ana)
    assert (await s.api.post(f"/api/v1/callbacks/{rang_id}/call", headers=ana)).status_code == 202
    await s.ana.wait_event("CALL_ESTABLISHED", within=10)
    await _state(s, rang_id, ana, "dialing_citizen")
    await s.ana.hangup()
    done = await _ended(s, rang_id, ana)
    assert done["ending"] == "agent_hung_up" and done["outcome"] == "no_answer", done
    assert [a.outcome for a in (await s.rt.callbacks.get(rang_id)).attempts] == ["no_answer"]
    await _presence(s, "ana", "available")

    # the citizen's line is busy: a "busy" attempt, the callback due again later
    busy.set()
    mark = len(s.ana.events)
    busy_id, ref = await _callback(s, "600 111 555", ana)
    assert (await s.api.post(f"/api/v1/callbacks/{busy_id}/call", headers=ana)).status_code == 202
    done = await _ended(s, busy_id, ana)
    assert done["outcome"] == "busy", done
    cb = await s.rt.callbacks.get(busy_id)
    assert cb.status == "pending" and [a.outcome for a in cb.attempts] == ["busy"]
    noted = [i for i in await desk.tickets.interactions(ref) if i.kind == "callback_attempt"]
    assert noted and noted[-1].data["outcome"] == "busy"
    await s.ana.wait_event("CALL_CLOSED", within=10, start=mark)  # Atiende hung up her phone
    await _presence(s, "ana", "available")


async def _state(s: Setup, cb_id: str, who: dict[str, str], want: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await s.api.get(f"/api/v1/callbacks/{cb_id}/call", headers=who)).json().get("state") == want:
            return
        await asyncio.sleep(0.1)
    raise HarnessError(f"the call about {cb_id} never was {want}")


async def _presence(s: Setup, agent: str, want: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (got := (await s.rt.desk.agents.get(agent)).presence) != want:  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise HarnessError(f"agent {agent} is {got}, not {want}")
        await asyncio.sleep(0.1)
