"""Issue 18.2 and 18.6 end to end, with real SIP calls over loopback in a network namespace: a caller (a SIP UA on
its own port, so the test speaks when it wants, as in tests/test_voicemail_e2e.py), the agent and the supervisor
(baresip each), every party playing its own Spanish sentence over and over.

The queue is recorded: the caller hears the consent notice before the agent rings. The supervisor joins through
the API in listen mode, then whispers, then barges; in each phase what every party heard is checked by
correlation against the three sentences (it hears exactly what the mode allows). The agent pauses the recording
during the whisper; the stored WAV holds caller and agent, the barge, and a pause.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from atiende.runtime import Runtime
from desk.models import Agent
from tests.atiende_line import LINE, Heard, live, login
from tests.conftest import STAFF_PASSWORD
from tests.sip_harness import RATE, correlate, espeak_wav, pad_wav, read_wav, write_wav

pytest_plugins = ["tests.sip_harness", "tests.atiende_line"]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]

PHASE_S = 6.0
LEAD_S = 1.8  # a mode change takes a poll (0.5 s) and reaches the far phone's jitter buffer
HEARD, NOT_HEARD = 0.35, 0.2


def sentence(text: str, path: Path, speed: int, voice: str = "es") -> np.ndarray:
    return read_wav(espeak_wav(text, path, voice=voice, speed=speed))


def looped(one: np.ndarray, seconds: float, gap_s: float = 0.3) -> np.ndarray:
    period = np.concatenate([one, np.zeros(int(gap_s * RATE), dtype=one.dtype)])
    return np.tile(period, int(seconds * RATE / len(period)) + 1)


def window(samples: np.ndarray, start: float, end: float) -> np.ndarray:
    return samples[int(start * RATE): int(end * RATE)]


def scores(refs: dict[str, np.ndarray], heard: np.ndarray) -> dict[str, float]:
    return {name: round(correlate(ref, heard).score, 3) for name, ref in refs.items()}


async def test_listen_whisper_barge_and_the_recording(line: Runtime, phone: Any, baresips: Any, tmp_path: Path) -> None:
    rt = line
    rt.settings.agents.ring_timeout_s = 10.0
    rt.settings.agents.recording.queues = ["N1"]
    desk: Any = rt.desk
    refs = {
        "caller": sentence("Quiero pedir una cita para renovar el carné.", tmp_path / "c.wav", 165),
        "agent": sentence("Le atiende Ana, dígame su número de expediente.", tmp_path / "a.wav", 150, "es+f3"),
        "supervisor": sentence("Soy la supervisora, compruebo la calidad.", tmp_path / "s.wav", 135, "es+m3"),
    }
    agent_wav = pad_wav(write_wav(tmp_path / "agent-loop.wav", looped(refs["agent"], 90)), tmp_path / "ap.wav", 0, 60)
    sup_wav = pad_wav(write_wav(tmp_path / "sup-loop.wav", looped(refs["supervisor"], 90)), tmp_path / "sp.wav", 0, 60)
    ana = await baresips(user="ana", answer="auto", wav=agent_wav)
    sara_phone = await baresips(user="sara", answer="auto", wav=sup_wav)
    await desk.auth.create_user("sara", "Sara", ["supervisor"], STAFF_PASSWORD, level=2, skills=["supervision"],
                                sip_uri=sara_phone.aor)
    await desk.auth.create_user("ana", "Ana", ["agent_n1"], STAFF_PASSWORD, level=1, skills=["general"],
                                sip_uri=ana.aor)
    await desk.agents.upsert(Agent(id="ana", name="Ana", level=1, skills=["general"], sip_uri=ana.aor))
    await desk.agents.set_presence("ana", "available", actor="test")

    from desk_api.app import create_app

    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
        sara, ana_desk = await login(api, "sara"), await login(api, "ana")
        caller_number = "600777888"
        call = await phone.dial(LINE, from_user=caller_number)
        heard = Heard(call)
        await live(rt, caller_number, lambda r: any(p.verb == "say" for p in r.path), 60)
        await asyncio.sleep(1.5)
        await call.send_dtmf("0")
        established = await ana.wait_event("CALL_ESTABLISHED", within=60)  # after the consent notice
        assert established
        loop = asyncio.get_running_loop()
        t_agent = loop.time()
        talk = asyncio.create_task(call.play([looped(refs["caller"], 60).tobytes()], interrupt_on_dtmf=False))
        calls: list[dict[str, Any]] = []
        for _ in range(40):
            calls = (await api.get("/api/v1/calls/live", headers=sara)).json()["calls"]
            if calls:
                break
            await asyncio.sleep(0.25)
        assert len(calls) == 1 and calls[0]["agent"] == "ana" and calls[0]["recording"], calls
        call_id = calls[0]["call_id"]

        marks: dict[str, float] = {}
        caller_marks: dict[str, float] = {}
        r = await api.post(f"/api/v1/calls/{call_id}/supervise", headers=sara, json={"mode": "listen"})
        assert r.status_code == 202, r.text
        await sara_phone.wait_event("CALL_ESTABLISHED", within=20)
        t_sup = loop.time()
        marks["listen"], caller_marks["listen"] = t_sup, heard.at() / RATE
        await asyncio.sleep(PHASE_S)
        for mode in ("whisper", "barge"):
            r = await api.post(f"/api/v1/calls/{call_id}/supervise", headers=sara, json={"mode": mode})
            assert r.status_code == 202, r.text
            marks[mode], caller_marks[mode] = loop.time(), heard.at() / RATE
            action = "pause" if mode == "whisper" else "resume"
            r = await api.post(f"/api/v1/calls/{call_id}/recording", headers=ana_desk, json={"action": action})
            assert r.status_code == 202, r.text
            await asyncio.sleep(PHASE_S)
        marks["end"], caller_marks["end"] = loop.time(), heard.at() / RATE
        state = (await api.get("/api/v1/calls/live", headers=sara)).json()["calls"][0]
        assert state["supervisor"] == "user:sara" and state["mode"] == "barge" and not state["recording_paused"]
        talk.cancel()
        await call.hangup()
        await asyncio.wait_for(heard.task, 10)
        await ana.wait_event("CALL_CLOSED", within=20)
        await sara_phone.wait_event("CALL_CLOSED", within=20)

        rec = await live(rt, caller_number, lambda r: r.ended_at is not None and bool(r.vars.get("recordings")), 20)
        assert rt.settings.agents.recording.consent_text in rec.said
        assert rec.vars.get("supervised_by") == ["user:sara"]
        rec_id = rec.vars["recordings"][0]
        listed = (await api.get(f"/api/v1/calls/{call_id}/recordings", headers=sara)).json()["recordings"]
        assert [x["id"] for x in listed] == [rec_id]
        audio = await api.get(f"/api/v1/recordings/{rec_id}/audio", headers=sara)
        assert audio.status_code == 200
        assert (await api.get("/api/v1/calls/live", headers=sara)).json()["calls"] == []

    agent_heard = read_wav(ana.recordings()[0])
    sup_heard = read_wav(sara_phone.recordings()[0])
    caller_heard = heard.samples()
    allowed = {  # who hears whom, per mode (ivr/conference.py)
        "listen": {"caller": {"agent"}, "agent": {"caller"}, "supervisor": {"caller", "agent"}},
        "whisper": {"caller": {"agent"}, "agent": {"caller", "supervisor"}, "supervisor": {"caller", "agent"}},
        "barge": {"caller": {"agent", "supervisor"}, "agent": {"caller", "supervisor"},
                  "supervisor": {"caller", "agent"}},
    }
    wrong: list[str] = []
    report: list[str] = []
    for mode, nxt in (("listen", "whisper"), ("whisper", "barge"), ("barge", "end")):
        windows = {
            "caller": window(caller_heard, caller_marks[mode] + LEAD_S, caller_marks[nxt] - 0.3),
            "agent": window(agent_heard, marks[mode] - t_agent + LEAD_S, marks[nxt] - t_agent - 0.3),
            "supervisor": window(sup_heard, marks[mode] - t_sup + LEAD_S, marks[nxt] - t_sup - 0.3),
        }
        for party, samples in windows.items():
            got = scores({k: v for k, v in refs.items() if k != party}, samples)
            report.append(f"{mode} {party}: {got}")
            for source, score in got.items():
                should = source in allowed[mode][party]
                if (should and score < HEARD) or (not should and score > NOT_HEARD):
                    wrong.append(f"{mode}: {party} {'should' if should else 'should not'} hear {source} ({score})")
    print("\n".join(report))
    assert wrong == [], "\n".join(wrong + report)

    # the recording: caller and agent mixed, the barge in it, the whisper phase paused out of it
    meta = json.loads(str(await rt.store.redis.get(rt.store.keys.call_recording(rec_id))))
    assert meta["state"] == "done" and meta["agent"] == "ana" and meta["queue"] == "N1" and len(meta["pauses"]) == 1
    stored = read_wav(rt.data_dir / "voicemail" / f"{rec_id}.wav")
    bridged_s = marks["end"] - t_agent
    assert bridged_s - PHASE_S - 2.5 < len(stored) / RATE < bridged_s - PHASE_S + 2.5, (len(stored) / RATE, bridged_s)
    got = scores(refs, stored)
    assert got["caller"] > HEARD and got["agent"] > HEARD and got["supervisor"] > HEARD, got
    pause_at = meta["pauses"][0]["at_s"]
    whisper_free = scores({"supervisor": refs["supervisor"]}, stored[: int((pause_at - 0.5) * RATE)])
    assert whisper_free["supervisor"] < NOT_HEARD, whisper_free  # listening is not in the recording either
