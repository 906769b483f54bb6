"""The recognition policy of the engine, with a router whose confidence the test decides.

The real router's scores cannot be steered into "unsure" on purpose, so these tests give the
engine a scripted router (text -> intent, confidence); everything else is real: the default
flows, the calendar, the knowledge base, the answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

from config.loader import Loaded
from core.clock import FixedClock
from ivr.answers import Answers
from ivr.contact import Session
from ivr.engine import Deps, Engine
from ivr.hooks import DryRunHooks
from ivr.textio import InputKind, ScriptedIO
from routing.calendar import Calendar
from tests.conftest import MADRID

OPEN = datetime(2026, 11, 23, 10, 0, tzinfo=MADRID)  # Monday, in hours
CLOSED = datetime(2026, 11, 23, 20, 0, tzinfo=MADRID)


class _Result(BaseModel):
    intent: str | None
    confidence: float
    needs_confirmation: bool = False
    entities: dict[str, Any] = {}


class ScriptedRouter:
    def __init__(self, table: dict[str, tuple[str | None, float]]) -> None:
        self.table = table

    def route(self, text: str, channel: str = "voice") -> _Result:
        intent, conf = self.table.get(text, (None, 0.1))
        return _Result(intent=intent, confidence=conf)

    def hints(self) -> list[str]:
        return []


ROUTER = ScriptedRouter({
    "quiero pagar la itv": ("tasa_itv", 0.95),
    "algo de la itv": ("tasa_itv", 0.55),
    "el horario": ("horario", 0.95),
    "hablar con alguien": ("hablar_agente", 0.95),
})


async def _run(loaded: Loaded, inputs: list[tuple[InputKind, str]], at: datetime = OPEN) -> tuple[Session, list[str]]:
    s = loaded.settings
    deps = Deps(settings=s, router=ROUTER, calendar=Calendar("line", s.calendar.calendars["line"]),
                hooks=DryRunHooks.make(), clock=FixedClock(at))
    io = ScriptedIO(inputs)
    session = await Engine(s.ivr, deps, answers=Answers).run(io)
    return session, [m.text for m in io.out]


def _flows(session: Session) -> list[str]:
    out: list[str] = []
    for p in session.path:
        if not out or out[-1] != p.flow:
            out.append(p.flow)
    return out


@pytest.mark.anyio
async def test_sure_intent_is_answered_without_confirmation(loaded: Loaded) -> None:
    session, said = await _run(loaded, [("say", "quiero pagar la itv"), ("say", "no")])
    assert _flows(session) == ["main", "ask", "itv", "more", "goodbye"]
    assert session.outcome == "self_service" and session.intent == "tasa_itv"
    assert not any("¿Quiere pagar" in t for t in said)
    assert any("35 euros" in t for t in said)


@pytest.mark.anyio
async def test_unsure_intent_is_confirmed_yes(loaded: Loaded) -> None:
    session, said = await _run(loaded, [("say", "algo de la itv"), ("say", "sí"), ("say", "no")])
    assert any(t == "¿Quiere pagar o consultar la tasa de la ITV? Diga sí o no." for t in said)
    assert _flows(session)[:3] == ["main", "ask", "itv"] and session.outcome == "self_service"


@pytest.mark.anyio
async def test_unsure_intent_denied_asks_again(loaded: Loaded) -> None:
    session, said = await _run(loaded, [("say", "algo de la itv"), ("say", "no"), ("say", "el horario"), ("say", "no")])
    assert session.intent == "horario" and "hours" in _flows(session) and "itv" not in _flows(session)
    assert any(t.endswith("Dígame qué más necesita.") for t in said)


@pytest.mark.anyio
async def test_the_same_wrong_guess_is_not_proposed_twice(loaded: Loaded) -> None:
    """The caller says no, repeats their words, the router guesses the same: the keypad menu, not the question
    again (over SIP 3 of 3 such calls went round once more before the menu)."""
    session, said = await _run(loaded, [("say", "algo de la itv"), ("say", "no"), ("say", "algo de la itv"),
                                        ("dtmf", "7"), ("say", "no")])
    assert sum(t.startswith("¿Quiere pagar o consultar la tasa de la ITV?") for t in said) == 1
    assert any(t.startswith("Puede elegir con el teclado.") for t in said)
    assert session.intent == "horario" and session.vars["via"] == "dtmf_menu"


def _asks_seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every question the engine asks, in order."""
    asks: list[Any] = []
    real = ScriptedIO.gather

    async def seen(self: ScriptedIO, ask: Any) -> Any:
        asks.append(ask)
        return await real(self, ask)

    monkeypatch.setattr(ScriptedIO, "gather", seen)
    return asks


@pytest.mark.anyio
async def test_a_confirmation_takes_one_key(loaded: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without num_digits the keypad waited 3 s for a second digit after "1" (measured over SIP: 2.8-2.9 s)."""
    asks = _asks_seen(monkeypatch)
    await _run(loaded, [("say", "algo de la itv"), ("dtmf", "1"), ("say", "no")])
    confirm = next(a for a in asks if a.text.startswith("¿Quiere pagar"))
    assert confirm.num_digits == 1


@pytest.mark.anyio
async def test_yes_no_questions_are_scored_against_their_phrases(loaded: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    # A lone "sí" over G.711 is transcribed as "y" or nothing, and snapping a transcript to a sí/no grammar made
    # "hola" a "no": both kinds of yes/no question carry the closed set, a judge, and no grammar to snap to.
    from ivr.contact import Ask
    from ivr.engine import YES_NO

    asks = _asks_seen(monkeypatch)
    await _run(loaded, [("say", "algo de la itv"), ("say", "sí")])
    confirm = next(a for a in asks if a.text.startswith("¿Quiere pagar"))
    assert confirm.closed is YES_NO and confirm.grammar is None and confirm.accept is not None
    assert confirm.accept("sí") and confirm.accept("vale") and not confirm.accept("y")
    s = loaded.settings
    engine = Engine(s.ivr, Deps(settings=s, router=ROUTER, calendar=Calendar("line", s.calendar.calendars["line"]),
                                hooks=DryRunHooks.make(), clock=FixedClock(OPEN)), answers=Answers)
    ask = Ask(text="¿Quiere que se lo repita? Diga sí o no.")  # Engine.confirm's question
    engine._vocabulary(ask, "yes_no")
    assert ask.closed is YES_NO and ask.grammar is None and ask.accept is not None and not ask.accept("hola")


@pytest.mark.anyio
async def test_no_match_then_dtmf_menu_then_keyed_choice(loaded: Loaded) -> None:
    session, said = await _run(loaded, [("say", "patatas"), ("say", "tomates"), ("dtmf", "7"), ("say", "no")])
    assert any(t.startswith("Perdone, no le he entendido.") for t in said)
    menu = next(t for t in said if t.startswith("Puede elegir con el teclado."))
    assert "Para el horario de este servicio, pulse 7." in menu
    assert session.intent == "horario" and session.vars["via"] == "dtmf_menu"
    assert _flows(session) == ["main", "ask", "hours", "more", "goodbye"] and session.outcome == "self_service"


@pytest.mark.anyio
async def test_no_input_retries_then_menu_then_person(loaded: Loaded) -> None:
    session, said = await _run(loaded, [("say", ""), ("say", ""), ("say", ""), ("say", ""), ("say", "")])
    assert sum(t.startswith("Perdone, no le he oído.") for t in said) == 2
    assert session.vars["gave_up"] == "no_input"
    assert _flows(session)[-1] == "person" and session.outcome == "queued" and session.queue == "N1"


@pytest.mark.parametrize("said_zero", [("say", "cero"), ("dtmf", "0"), ("say", "hablar con alguien")])
@pytest.mark.anyio
async def test_zero_reaches_a_person_while_open(loaded: Loaded, said_zero: tuple[InputKind, str]) -> None:
    session, _ = await _run(loaded, [said_zero])
    assert session.intent == "hablar_agente" and session.outcome == "queued"
    assert _flows(session) == ["main", "ask", "person"]


@pytest.mark.anyio
async def test_zero_at_a_later_question_still_reaches_a_person(loaded: Loaded) -> None:
    session, _ = await _run(loaded, [("say", "quiero pagar la itv"), ("say", "cero")])
    assert _flows(session) == ["main", "ask", "itv", "more", "person"] and session.outcome == "queued"


@pytest.mark.anyio
async def test_closed_line_goes_to_the_closed_branch(loaded: Loaded) -> None:
    session, said = await _run(loaded, [("say", "no")], at=CLOSED)
    assert session.calendar_state == "closed" and _flows(session) == ["main", "closed", "goodbye"]
    assert any("está cerrado" in t and "mañana a las 8:30" in t for t in said)
    assert session.outcome == "abandoned"


@pytest.mark.anyio
async def test_caller_hanging_up_is_recorded(loaded: Loaded) -> None:
    session, _ = await _run(loaded, [])  # silence until the scripted caller gives up
    assert session.ended_by == "caller" or session.outcome == "queued"
    assert session.path and all(p.ms >= 0 for p in session.path)
    assert [t.kind for t in session.transcripts][:3] == ["no_input", "no_input", "no_input"]


@pytest.mark.anyio
async def test_record_transfer_and_answer_fallback_verbs(loaded: Loaded) -> None:
    from config.flows import Flows

    s = loaded.settings
    doc = Flows.model_validate({
        "prompts": {"no_input": "x", "no_match": "y"},
        "person_flow": "agent", "closed_flow": "agent", "policy": {"handover": "agent"},
        "flows": {
            "main": [{"verb": "record", "text": "Diga su nombre.", "into": "name"},
                     {"verb": "say", "text": "Gracias, {name}."},
                     {"verb": "answer", "topic": "procedure", "on_fail": "agent"}],
            "agent": [{"verb": "transfer", "to": "sip:agente@127.0.0.1"}],
        }})
    deps = Deps(settings=s, router=ROUTER, calendar=Calendar("line", s.calendar.calendars["line"]),
                hooks=DryRunHooks.make(), clock=FixedClock(OPEN))
    io = ScriptedIO([("say", "Ana")])
    session = await Engine(doc, deps, answers=Answers).run(io)
    assert [m.text for m in io.out][:2] == ["Diga su nombre.", "Gracias, Ana."]
    assert session.vars["name"] == "Ana" and session.transcripts[0].kind == "recording"
    assert io.transferred_to == "sip:agente@127.0.0.1" and session.outcome == "transferred"
    assert [p.verb for p in session.path] == ["record", "say", "answer", "transfer"]


@pytest.mark.anyio
@pytest.mark.parametrize("garbled", ["C,", "Sí.", "si", "Jun,"])
async def test_a_garbled_yes_is_taken_or_the_keypad_is_offered(loaded: Loaded, garbled: str) -> None:
    # Whisper over a phone line heard "sí" as "C," or "Jun,": never a dead end, never another open question.
    session, said = await _run(loaded, [("say", "algo de la itv"), ("say", garbled), ("dtmf", "1"), ("say", "no")])
    assert session.intent == "tasa_itv" and "itv" in _flows(session), said
    if garbled == "Jun,":  # not a yes: the keypad question follows, and the key answers it
        assert any(t.startswith("Perdone. Si es así, pulse 1. Si no, pulse 2.") for t in said), said
    else:
        assert not any("pulse 1" in t and "Si es así" in t for t in said), said


@pytest.mark.anyio
async def test_a_new_request_instead_of_yes_or_no_is_taken_as_the_answer(loaded: Loaded) -> None:
    session, said = await _run(loaded, [("say", "algo de la itv"), ("say", "el horario"), ("say", "no")])
    # "el horario" routes to an intent: the caller changed their mind, it is not a garbled yes/no
    assert session.intent == "horario" and "hours" in _flows(session)
    assert not any("Si es así, pulse 1" in t for t in said)


def test_sounds_like_yes_no() -> None:
    from ivr.engine import sounds_like_yes_no

    assert [sounds_like_yes_no(t) for t in ["C,", "Sí.", "sip", "No.", "nou", "1", "2", "Jun,", "4,", "quiero la itv"]] == [
        True, True, True, False, False, True, False, None, None, None]


@pytest.mark.parametrize(("name", "preposition", "spoken"), [
    ("Servicio Extremeño de Salud", "de", "del Servicio Extremeño de Salud"),
    ("Consejería de Educación Ciencia y Formación Profesional", "de",
     "de la Consejería de Educación Ciencia y Formación Profesional"),
    ("Servicio de Inspección Educativa", "a", "al Servicio de Inspección Educativa"),
    ("Dirección General de Tributos", "", "la Dirección General de Tributos"),
    ("La Oficina Verde", "de", "de la Oficina Verde"),
    ("SEPAD", "de", "de SEPAD"),  # unknown gender: no article rather than a wrong one
])
def test_body_names_take_their_article(name: str, preposition: str, spoken: str) -> None:
    from ivr.speak import with_article

    assert with_article(name, preposition) == spoken
