"""The IVR end to end: real SIP calls from baresip (tests/sip_harness.py) to the line, speech generated with
espeak-ng, recognised by the real speech engine, routed by the real router, answered through the real desk.

- one batch of concurrent scripted calls (ITV, office without the town, "cero", "hablar con una persona",
  no-match -> keypad menu -> keyed choice), each checked by its call record (and the ITV answer by what
  baresip recorded), with the containment rate printed;
- a call on a holiday (service clock set to it) takes the closed branch.

Needs root (ip netns), baresip, espeak-ng, sox and the speech models of the `models` extra.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atiende.runtime import Runtime
from core.clock import ShiftedClock
from ivr.contact import Session
from ivr.records import containment
from tests.atiende_line import LINE, live
from tests.conftest import MADRID
from tests.sip_harness import RATE, Baresip, correlate, espeak_wav, read_wav, write_wav

pytest_plugins = ["tests.sip_harness", "tests.atiende_line"]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.anyio]

Script = list[tuple[float, str]]  # (seconds of silence before, what the caller says)


def caller_wav(directory: Path, name: str, script: Script, tail_s: float = 90.0) -> Path:
    """The caller's microphone: silences and espeak-ng utterances, then silence (baresip hangs up at the end)."""
    parts: list[np.ndarray] = []
    for i, (pause, text) in enumerate(script):
        parts.append(np.zeros(int(pause * RATE), dtype="<i2"))
        parts.append(read_wav(espeak_wav(text, directory / f"{name}-{i}.wav", speed=130)))
    parts.append(np.zeros(int(tail_s * RATE), dtype="<i2"))
    return write_wav(directory / f"{name}.wav", np.concatenate(parts))


def flows(rec: Session) -> list[str]:
    out: list[str] = []
    for p in rec.path:
        if not out or out[-1] != p.flow:
            out.append(p.flow)
    return out


def asked(rec: Session, fragment: str) -> bool:
    return any(fragment in t for t in rec.said)


async def ended(rt: Runtime, caller: str, within: float = 20.0) -> Session:
    return await live(rt, caller, lambda r: r.ended_at is not None, within)


async def test_scripted_calls_reach_answers_and_queues(line: Runtime, baresips: Any, tmp_path: Path) -> None:
    rt = line
    scripts: dict[str, Script] = {
        "itv": [(2.0, "quiero pagar la tasa de la inspección técnica del coche")],
        "oficina": [(2.0, "quiero saber dónde está la oficina"), (7.0, "Cáceres")],
        # A caller misheard once says "no" to the wrong guess and says it again, as a person would: whisper base
        # now and then hears espeak's lone "cero" as "Salud." (a health service: "¿Quiere el teléfono de un
        # organismo?"); heard right the first time, the rest falls on the queue's hold, which ignores speech.
        "cero": [(2.0, "cero"), (9.0, "no"), (6.0, "cero")],
        "persona": [(2.0, "quiero hablar con una persona")],
        "nomatch": [(2.0, "mi perro se llama toby"), (6.0, "mi perro se llama toby")],
    }
    phones: dict[str, Baresip] = {}
    for name, script in scripts.items():
        phones[name] = await baresips(wav=caller_wav(tmp_path, name, script), user=name)
    for b in phones.values():
        await b.dial(LINE)

    # no-match twice, then the keypad menu: key 7 (the phone service's hours)
    await live(rt, "nomatch", lambda r: asked(r, "Puede elegir con el teclado."), 90)
    await phones["nomatch"].send_dtmf("7")

    # each call reaches where it should; then the caller hangs up
    await live(rt, "itv", lambda r: "more" in flows(r), 90)
    await live(rt, "oficina", lambda r: "more" in flows(r), 90)
    await live(rt, "cero", lambda r: r.outcome == "queued", 90)
    await live(rt, "persona", lambda r: r.outcome == "queued", 90)
    await live(rt, "nomatch", lambda r: "more" in flows(r), 60)
    for b in phones.values():
        await b.hangup()
    records = {name: await ended(rt, name) for name in scripts}

    itv = records["itv"]
    assert itv.intent == "tasa_itv" and flows(itv)[:3] == ["main", "ask", "itv"] and itv.outcome == "self_service"
    assert itv.transcripts[0].kind == "speech" and itv.transcripts[0].confidence > 0
    assert all(p.ms >= 0 for p in itv.path) and sum(p.ms for p in itv.path) > 3000
    # the caller heard the ITV answer: find its first seconds in what baresip recorded
    answer = next(t for t in itv.said if "tasa de la ITV" in t)
    rendered = b"".join([f async for f in rt.speech.synth(answer)])
    reference = np.frombuffer(rendered, dtype="<i2")[: 2 * RATE]
    heard = read_wav(phones["itv"].recordings()[0])
    match = correlate(reference, heard)
    assert match.score > 0.6, str(match)

    office = records["oficina"]
    assert office.intent == "oficinas" and asked(office, "¿De qué localidad quiere la oficina?")
    assert any("Cáceres" in t and "Plaza Ejemplo 3" in t for t in office.said), (office.said, office.transcripts)
    assert office.outcome == "self_service"

    for rec in (records["cero"], records["persona"]):
        assert rec.outcome == "queued" and rec.queue == "N1", flows(rec)
        assert flows(rec)[-1] == "person" and rec.ended_by == "caller"
    assert records["persona"].intent == "hablar_agente"
    # espeak's lone "cero" is now and then heard as a low-confidence "Salud." by whisper base; such a word is no
    # longer routed anywhere (issue 17): the caller is asked again, then offered the keypad, and still reaches a
    # person. What this caller must get is a person, however it is understood ("cero" itself: tests/test_ivr_engine.py).
    cero = records["cero"]
    assert cero.intent == "hablar_agente" or cero.vars.get("gave_up"), ([t.text for t in cero.transcripts], cero.vars)

    keyed = records["nomatch"]
    assert [t.kind for t in keyed.transcripts][:2] == ["speech", "speech"]
    assert asked(keyed, "Perdone, no le he entendido.") and keyed.vars.get("via") == "dtmf_menu"
    assert keyed.intent == "horario" and "hours" in flows(keyed) and keyed.outcome == "self_service"

    report = containment(records.values(), await rt.ivr.self_service_intents())
    print(f"\ncontainment: {report['self_service']}/{report['eligible']} = {report['containment']} "
          f"(calls {report['calls']}, outcomes {report['by_outcome']})")
    assert report["containment"] == 1.0 and report["eligible"] == 3


async def test_holiday_call_takes_the_closed_branch(line: Runtime, baresips: Any, tmp_path: Path) -> None:
    rt = line
    rt.clock = ShiftedClock(datetime(2026, 12, 8, 10, 0, tzinfo=MADRID))  # Inmaculada Concepción
    phone = await baresips(wav=caller_wav(tmp_path, "festivo", [], tail_s=60), user="festivo")
    await phone.dial(LINE)
    # hang up as soon as the calendar branch chose the closed flow (mid-prompt: the record keeps what was said)
    await live(rt, "festivo", lambda r: any(p.verb == "branch" and p.detail.get("value") == "holiday" for p in r.path), 60)
    await asyncio.sleep(1.0)
    await phone.hangup()
    rec = await ended(rt, "festivo")
    assert rec.calendar_state == "holiday" and flows(rec)[:2] == ["main", "closed"] and rec.ended_by == "caller"
    assert any("cerrado por ser festivo, Inmaculada Concepción" in t for t in rec.said)
    assert any("Volveremos a atenderle mañana a las 8:30" in t for t in rec.said)
