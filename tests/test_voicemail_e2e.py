"""Issue 9 end to end, with real SIP calls over loopback in a network namespace:

- Friday 19:00 before a Monday holiday: the caller hears the hours, leaves a message, hears a reference; the
  ticket has the recording (playable, intact through a restart) and its transcript; the callback is due
  Tuesday 08:30;
- a queued call reaches an agent's phone (baresip): the longest-idle agent rings first, one who does not
  answer is skipped, and both sides hear each other through Atiende's bridge;
- the callback worker places a due callback as an outbound call to a baresip that answers, and records it.

The caller is a second in-process SipEndpoint (a real SIP UA on its own port), so the test can key and speak
at the moment the IVR asks; the agents and the callback target are baresip.
"""

from __future__ import annotations

import asyncio
import time
import wave
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atiende.runtime import Runtime
from core.clock import ShiftedClock
from desk.models import Agent
from tests.atiende_line import LINE, Heard, live
from tests.conftest import MADRID
from tests.sip_harness import RATE, correlate, espeak_wav, pad_wav, read_wav, tone_wav, wav_frames

pytest_plugins = ["tests.sip_harness", "tests.atiende_line"]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]

FRIDAY_EVE = datetime(2026, 10, 9, 19, 0, tzinfo=MADRID)  # Monday 12 October: Fiesta Nacional
TUESDAY_OPEN = datetime(2026, 10, 13, 8, 30, tzinfo=MADRID)


async def test_friday_evening_voicemail_becomes_a_ticket_called_back_tuesday(
        line: Runtime, phone: Any, tmp_path: Path) -> None:
    rt = line
    rt.clock = ShiftedClock(FRIDAY_EVE)
    caller = "600111222"
    call = await phone.dial(LINE, from_user=caller)
    heard = Heard(call)
    # records are saved as each step ends: once the hours have been said, the voicemail offer is playing
    await live(rt, caller, lambda r: any(p.flow == "closed" and p.verb == "say" for p in r.path), 90)
    await asyncio.sleep(1.0)
    await call.send_dtmf("1")  # "¿Quiere dejar un mensaje?" -> yes (a key overtakes the prompt)
    await heard.beep(within=60)
    message = espeak_wav("Hola, llamo por la ayuda del alquiler de vivienda. Por favor, llámenme mañana.",
                         tmp_path / "message.wav", speed=140)
    await call.play(wav_frames(message), interrupt_on_dtmf=False)
    await asyncio.wait_for(call.ended.wait(), 90)  # silence ends the message; the IVR says the reference, hangs up
    await asyncio.wait_for(heard.task, 5)

    rec = await live(rt, caller, lambda r: r.ended_at is not None, 10)
    assert rec.calendar_state == "closed" and rec.outcome == "voicemail" and rec.ticket_ref
    assert any("Nuestro horario es" in t for t in rec.said), rec.said  # the hours were said
    assert any("referencia" in t for t in rec.said)
    assert len(heard.pcm) > 20 * 2 * RATE  # the caller heard the prompts and the reference

    desk: Any = rt.desk  # type: ignore[attr-defined]
    ticket = await desk.tickets.get(rec.ticket_ref)
    assert ticket.kind == "voicemail" and ticket.due == TUESDAY_OPEN and ticket.trace_id == rec.trace_id
    vm = (await desk.tickets.interactions(rec.ticket_ref))[0]
    assert vm.kind == "voicemail" and vm.data["complete"] is True and vm.text, vm
    path = rt.data_dir / "voicemail" / f"{rec.call_id}.wav"
    with wave.open(str(path)) as w:
        assert w.getframerate() == 8000 and w.getnframes() / 8000 > 3.0
    spoken = read_wav(message)
    match = correlate(spoken[: 2 * RATE], read_wav(path))
    assert match.score > 0.6, str(match)  # what was said is what was stored

    callbacks = [c for c in await rt.callbacks.query() if c.ticket_ref == rec.ticket_ref]
    assert len(callbacks) == 1 and callbacks[0].due_at == TUESDAY_OPEN and callbacks[0].phone == "+34" + caller

    # a restart (a new runtime on the same Redis and data) serves the same recording
    import httpx

    from desk_api.app import create_app

    again = Runtime(rt.loaded, store=rt.store, clock=rt.clock)
    key = await again.desk.auth.create_api_key("agente", ["agent_n1"])  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=create_app(again))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        audio = await client.get(vm.data["recording"], headers={"X-API-Key": key})
    assert audio.status_code == 200 and audio.content == path.read_bytes()
    # Tuesday morning the citizen calls again and keys 5 ("¿cómo va mi consulta?"): the number finds the query
    rt.clock = ShiftedClock(datetime(2026, 10, 13, 10, 0, tzinfo=MADRID))
    first_call = rec.call_id
    again_call = await phone.dial(LINE, from_user=caller)
    await live(rt, caller, lambda r: r.call_id != first_call and any(p.verb == "say" for p in r.path), 60)
    await asyncio.sleep(1.5)
    await again_call.send_dtmf("5")
    later = await live(rt, caller, lambda r: r.call_id != first_call and any(
        "Tiene una consulta abierta" in t for t in r.said), 60)
    await again_call.hangup()
    spoken_status = await desk.tickets.status_text(rec.ticket_ref, spoken=True)
    assert any(spoken_status in t for t in later.said), later.said


async def test_queued_call_reaches_the_longest_idle_agent_who_answers(
        line: Runtime, phone: Any, baresips: Any, tmp_path: Path) -> None:
    rt = line
    rt.settings.agents.ring_timeout_s = 4.0
    desk: Any = rt.desk  # type: ignore[attr-defined]
    voice = espeak_wav("Buenos días, le atiende Ana, del servicio de atención a la ciudadanía. ¿En qué puedo ayudarle?",
                       tmp_path / "agent.wav", speed=140)
    voice = pad_wav(voice, tmp_path / "agent-padded.wav", before=1.0, after=60.0)  # baresip hangs up when it ends
    silent = await baresips(user="lento", answer="manual", wav=tone_wav(tmp_path / "t.wav", 60))
    ana = await baresips(user="ana", answer="auto", wav=voice)
    for agent_id, uri in (("lento", silent.aor), ("ana", ana.aor)):
        await desk.agents.upsert(Agent(id=agent_id, name=agent_id, level=1, skills=["general"], sip_uri=uri))
        await desk.agents.set_presence(agent_id, "available", actor="test")
        await asyncio.sleep(0.05)  # "lento" has been idle longer: it rings first

    caller = "600333444"
    call = await phone.dial(LINE, from_user=caller)
    heard = Heard(call)
    await live(rt, caller, lambda r: any(p.verb == "say" for p in r.path), 60)  # the welcome was said
    await asyncio.sleep(1.5)
    await call.send_dtmf("0")  # a person
    await silent.wait_event("CALL_INCOMING", within=60)  # the longest-idle agent rings first
    await ana.wait_event("CALL_ESTABLISHED", within=40)
    await asyncio.sleep(0.5)
    assert (await desk.agents.get("lento")).presence == "away"  # rang out: skipped, set away
    greeting = tone_wav(tmp_path / "caller.wav", 3.0, freq=700.0)
    await call.play(wav_frames(greeting), interrupt_on_dtmf=False)
    await asyncio.sleep(4.0)
    await call.hangup()
    await asyncio.wait_for(heard.task, 10)
    rec = await live(rt, caller, lambda r: r.ended_at is not None, 20)
    assert rec.outcome == "transferred" and rec.queue == "N1" and rec.vars.get("agent") == "ana"
    # the caller heard the agent, and the agent heard the caller
    assert correlate(read_wav(voice)[: 2 * RATE], heard.samples()).score > 0.6
    await ana.wait_event("CALL_CLOSED", within=20)
    agent_heard = read_wav(ana.recordings()[0])
    assert correlate(read_wav(greeting)[: RATE], agent_heard).score > 0.6
    assert (await desk.agents.get("ana")).presence == "available"  # back after the call


async def test_callback_worker_places_a_due_callback(line: Runtime, baresips: Any, sip_endpoint: Any,
                                                      tmp_path: Path) -> None:
    rt = line
    # The citizen's phone, reached as a number through the trunk (numbers are never dialled any other way).
    citizen = await baresips(user="+34600111333", answer="auto", wav=tone_wav(tmp_path / "t.wav", 60))

    async def refuse(call: Any) -> None:
        await call.reject(603)

    trunked = await sip_endpoint(refuse, port=5064, rtp_port_min=21100, rtp_port_max=21199,
                                 trunk={"proxy": f"sip:127.0.0.1:{citizen.sip_port}"})
    rt.attach_line(trunked)
    desk: Any = rt.desk  # type: ignore[attr-defined]
    ticket = await desk.tickets.create(channel="phone", queue="N1", subject="Mensaje de voz", kind="voicemail",
                                       body="llámenme", actor="ivr")
    svc = rt.callbacks
    cb = await svc.create(phone="600 111 333", ticket_ref=ticket.ref, due_at=rt.clock.now())
    assert cb.phone == "+34600111333"
    done = await rt.callback_worker.run_once()
    assert done is not None and done.id == cb.id and done.status == "done" and done.outcome == "reached"
    await citizen.wait_event("CALL_CLOSED", within=30)
    heard = read_wav(citizen.recordings()[0])
    assert len(heard) > 2 * RATE and np.abs(heard).mean() > 100  # the citizen heard the message
    kinds = [i.kind for i in await desk.tickets.interactions(ticket.ref)]
    assert "callback_attempt" in kinds


async def test_kill_while_recording_keeps_the_message_as_an_incomplete_ticket(
        netns: Any, netns_redis: str, phone: Any, tmp_path: Path) -> None:
    """The whole service (`atiende run`) is SIGKILLed mid-message; the next start files what was recorded."""
    import json
    import os
    import signal

    from config.loader import load
    from core.store import Store
    from tests.sip_harness import AtiendeService

    workdir = tmp_path / "svc"

    async def start(clock: str) -> AtiendeService:
        service = AtiendeService(netns, workdir, clock=clock, redis_url=netns_redis)
        service.ns = _Inside(netns)  # this test's thread is inside the namespace: reach HTTP there
        return await service.start(60)

    svc = await start("2026-10-09T19:00:00+02:00")
    store = Store(netns_redis)  # the service's own key prefix
    watcher = Runtime(load(None, env={}), store=store)
    caller = "600777888"
    try:
        call = await phone.dial(LINE, from_user=caller)
        heard = Heard(call)
        await live(watcher, caller, lambda r: any(p.flow == "closed" and p.verb == "say" for p in r.path), 120)
        await asyncio.sleep(1.0)
        await call.send_dtmf("1")
        await heard.beep(within=60)
        message = espeak_wav("Llamo por una beca de transporte. Mi número de expediente es el dos cero dos seis.",
                             tmp_path / "message.wav", speed=140)
        await call.play(wav_frames(message)[:150], interrupt_on_dtmf=False)  # three seconds of it, then the crash
        assert svc.proc is not None
        os.killpg(svc.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(svc.proc.popen.wait, 10)
        await call.hangup()
        part = workdir / "var" / "voicemail"
        assert [p.name for p in part.glob("*.wav.part")], "the message in progress is on disk"

        svc = await start("2026-10-09T19:05:00+02:00")
        deadline = time.monotonic() + 60
        state: dict[str, Any] = {}
        while time.monotonic() < deadline and state.get("status") != "incomplete":
            ids = [p.name.removesuffix(".wav") for p in part.glob("*.wav")]
            raw = await store.redis.get(store.keys.voicemail(ids[0])) if ids else None
            state = json.loads(raw) if raw else {}
            await asyncio.sleep(0.5)
        assert state.get("status") == "incomplete", state
        desk: Any = watcher.desk  # type: ignore[attr-defined]
        ticket = await desk.tickets.get(state["ticket"])
        assert ticket.kind == "voicemail" and ticket.meta["incomplete"] is True
        assert ticket.due == TUESDAY_OPEN
        with wave.open(state["path"]) as w:
            assert w.getnframes() / 8000 >= 2.0  # what was said before the kill
    finally:
        await svc.stop()
        await store.close()


class _Inside:
    """The namespace, seen from a thread already inside it: ports need no forwarding."""

    def __init__(self, ns: Any) -> None:
        self._ns = ns

    def forward_out(self, port: int, host: str = "127.0.0.1") -> int:
        return port

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ns, name)
