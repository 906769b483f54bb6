"""Issue 18's scenario through one real call (SIP in a network namespace): the caller asks for a person and waits
(hears the position and the estimated wait; the wallboard counts them waiting), the recorded queue's consent
notice, the agent (baresip) answers when she becomes available, a supervisor (baresip) whispers then barges
(kept out of queue offers meanwhile), the agent sets a disposition and hangs up, the caller answers the survey
on the keypad; the wallboard showed each state; the CDR carries it all. Who hears whom in each supervision mode
is tests/test_supervision_e2e.py's business; here the operations are followed through one call, to the CDR and the
reports."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from desk.models import Agent
from tests.atiende_line import LINE, Heard, live, login
from tests.conftest import STAFF_PASSWORD
from tests.sip_harness import espeak_wav, pad_wav

pytest_plugins = ["tests.sip_harness", "tests.atiende_line"]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]


async def _until(check: Any, within: float, what: str) -> Any:
    """Poll an async check until it returns something true (bounded)."""
    last = None
    for _ in range(int(within / 0.25)):
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} not seen within {within} s (last: {last})")


async def test_one_call_through_the_contact_centre(line: Runtime, phone: Any, baresips: Any, tmp_path: Path) -> None:
    rt = line
    rt.settings.agents.ring_timeout_s = 10.0
    rt.settings.agents.recording.queues = ["N1"]
    _, doc = await rt.ivr.current_flows()
    flows = doc.model_dump(mode="json", exclude_none=True)
    flows["survey"] = {"enabled": True}
    await rt.flows.put(flows, actor="user:admin")
    # the queue answered one caller every five minutes lately: the estimate is "unos 5 minutos"
    r, k = rt.store.redis, rt.store.keys
    now = rt.clock.now().timestamp()
    await r.zadd(k.queue_answers("N1"), {f"past-{i}|30.0": now - 60 - i * 300 for i in range(6)})

    voice = pad_wav(espeak_wav("Le atiende Ana, dígame.", tmp_path / "ana.wav"), tmp_path / "ana-pad.wav", 0, 60)
    ana_phone = await baresips(user="ana", answer="auto", wav=voice)
    sara_phone = await baresips(user="sara", answer="auto", wav=voice)
    desk: Any = rt.desk
    await desk.auth.create_user("sara", "Sara", ["supervisor"], STAFF_PASSWORD, level=2, skills=["general"],
                                sip_uri=sara_phone.aor)
    await desk.auth.create_user("ana", "Ana", ["agent_n1"], STAFF_PASSWORD, level=1, skills=["general"],
                                sip_uri=ana_phone.aor)
    await desk.agents.upsert(Agent(id="ana", name="Ana", level=1, skills=["general"], sip_uri=ana_phone.aor))
    await desk.agents.set_presence("ana", "away", actor="test")  # not yet at her desk

    from desk_api.app import create_app

    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
        sara, ana = await login(api, "sara"), await login(api, "ana")

        async def n1() -> dict[str, Any]:
            board = (await api.get("/api/v1/wallboard", headers=sara)).json()
            return next(q for q in board["queues"] if q["id"] == "N1")

        # 1. the caller asks for a person and waits
        caller = "600444555"
        call = await phone.dial(LINE, from_user=caller)
        heard = Heard(call)
        await live(rt, caller, lambda s: any(p.verb == "say" for p in s.path), 60)
        await asyncio.sleep(1.5)
        await call.send_dtmf("0")
        board = await _until(lambda: _waiting(n1), 30, "the caller on the wallboard")
        assert board["waiting"] == 1 and board["agents"]["on_call"] == 0

        # 2. the agent becomes available: her phone rings after the consent notice, and she answers
        assert (await api.put("/api/v1/agents/me/presence", headers=ana, json={"presence": "available"})).status_code == 200
        assert await ana_phone.wait_event("CALL_ESTABLISHED", within=60)
        calls = await _until(lambda: _live_calls(api, sara), 10, "the agent call on the live list")
        call_id = calls[0]["call_id"]
        assert calls[0]["agent"] == "ana" and calls[0]["recording"]
        board = await n1()
        assert board["waiting"] == 0 and board["agents"]["on_call"] == 1
        # the supervisor is at her desk too now, free for the queue (she has its skill)
        assert (await api.put("/api/v1/agents/me/presence", headers=sara, json={"presence": "available"})).status_code == 200
        assert (await n1())["agents"]["available"] == 1

        # 3. the supervisor whispers, then barges; meanwhile she is on a call for the queue, not free for it
        res = await api.post(f"/api/v1/calls/{call_id}/supervise", headers=sara, json={"mode": "whisper"})
        assert res.status_code == 202, res.text
        assert await sara_phone.wait_event("CALL_ESTABLISHED", within=20)
        held = await desk.agents.get("sara")
        assert (held.presence, held.current) == ("busy", f"supervise:{call_id}")
        assert (await n1())["agents"]["on_call"] == 2
        await asyncio.sleep(2.0)
        res = await api.post(f"/api/v1/calls/{call_id}/supervise", headers=sara, json={"mode": "barge"})
        assert res.status_code == 202, res.text
        state = await _until(lambda: _mode(api, sara, "barge"), 10, "barge on the live list")
        assert state["supervisor"] == "user:sara"
        await asyncio.sleep(2.0)

        # 4. the agent sets the disposition and hangs up; the caller rates the call on the keypad
        res = await api.post(f"/api/v1/calls/{call_id}/disposition", headers=ana, json={"code": "informado"})
        assert res.status_code == 200, res.text
        await ana_phone.hangup()
        await sara_phone.wait_event("CALL_CLOSED", within=20)  # the supervisor leaves with the agent
        await asyncio.sleep(2.0)  # the survey question starts; a key overtakes it
        await call.send_dtmf("4")
        done = await live(rt, caller, lambda s: s.ended_at is not None, 60)
        await asyncio.wait_for(heard.task, 10)
        assert done.survey == 4 and done.call_id == call_id
        assert rt.settings.agents.recording.consent_text in done.said
        assert "Gracias por su valoración." in done.said
        assert any("El tiempo de espera estimado es de unos 5 minutos." in t for t in done.said), done.said

        # 5. the CDR carries the whole call; the supervisor is free again
        cdr = (await api.get(f"/api/v1/calls/{call_id}/cdr", headers=sara)).json()
        assert (cdr["queue"], cdr["agent"], cdr["outcome"]) == ("N1", "ana", "transferred"), cdr
        assert (cdr["disposition"], cdr["survey"], cdr["supervised_by"]) == ("informado", 4, ["user:sara"]), cdr
        assert cdr["estimated_wait_s"] == 300 and cdr["wait_s"] is not None and cdr["wait_s"] > 0, cdr
        assert len(cdr["recordings"]) == 1 and cdr["caller"].endswith("555") and "600444" not in str(cdr)
        assert (await desk.agents.get("sara")).presence == "available"
        listed = (await api.get(f"/api/v1/calls/{call_id}/recordings", headers=sara)).json()["recordings"]
        assert [x["id"] for x in listed] == cdr["recordings"] and listed[0]["state"] == "done"
        board = await n1()
        assert board["waiting"] == 0 and board["answered"] >= 7
        # and the reports count it: the disposition, the survey by who served the call
        day = rt.clock.now().date().isoformat()
        report = (await api.get(f"/api/v1/reports/dispositions?start={day}&end={day}", headers=sara)).json()
        assert report["codes"]["informado"]["calls"] == 1, report
        surveys = (await api.get("/api/v1/calls/surveys", headers=sara)).json()
        assert surveys["agent"]["answers"] == 1 and surveys["agent"]["average"] == 4.0, surveys


async def _waiting(n1: Any) -> dict[str, Any] | None:
    q: dict[str, Any] = await n1()
    return q if q["waiting"] else None


async def _live_calls(api: httpx.AsyncClient, who: dict[str, str]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = (await api.get("/api/v1/calls/live", headers=who)).json()["calls"]
    return calls


async def _mode(api: httpx.AsyncClient, who: dict[str, str], mode: str) -> dict[str, Any] | None:
    calls = await _live_calls(api, who)
    return calls[0] if calls and calls[0].get("mode") == mode else None
