"""`atiende simulate` through every branch of the default flows (real router, calendar and knowledge base)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atiende.cli import main
from atiende.runtime import Runtime
from ivr.textio import InputKind

MONDAY = "2026-11-23T10:00"  # in hours
EVENING = "2026-11-23T20:00"  # closed: after hours
HOLIDAY = "2026-12-08T10:00"  # closed: Inmaculada Concepción (a Tuesday)


def simulate(capsys: pytest.CaptureFixture[str], *args: str, at: str = MONDAY) -> dict[str, Any]:
    code = main(["simulate", "--at", at, "--json", *args])
    return _result(capsys, code)


def _result(capsys: pytest.CaptureFixture[str], code: int) -> dict[str, Any]:
    out = capsys.readouterr().out
    assert code == 0, out
    result: dict[str, Any] = json.loads(out)
    result["flows"] = []
    for p in result["path"]:
        if not result["flows"] or result["flows"][-1] != p["flow"]:
            result["flows"].append(p["flow"])
    result["said"] = [m["text"] for m in result["messages"]]
    return result


def said(result: dict[str, Any], fragment: str) -> bool:
    return any(fragment in t for t in result["said"])


def test_itv_in_hours(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "quiero pagar la itv", "--say", "no")
    assert r["calendar"] == "open" and r["intent"] == "tasa_itv" and r["outcome"] == "self_service"
    assert r["flows"] == ["main", "ask", "itv", "more", "goodbye"]
    assert said(r, "35 euros para turismo") and said(r, "modelo 050")


def test_itv_amount_for_the_vehicle_named(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "cuánto cuesta la itv de la moto", "--say", "no")
    assert said(r, "Para un motocicleta, la tasa de la ITV es de 20 euros") or said(r, "20 euros")


def test_offices_with_the_town(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "la dirección de la oficina de mérida", "--say", "no")
    assert r["intent"] == "oficinas" and r["outcome"] == "self_service"
    assert said(r, "Calle Ejemplo 1, Mérida") and not said(r, "¿De qué localidad")


def test_offices_without_the_town_asks_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "dónde está la oficina de atención al ciudadano", "--say", "en cáceres", "--say", "no")
    assert said(r, "¿De qué localidad quiere la oficina?") and said(r, "Plaza Ejemplo 3, Cáceres")
    assert r["outcome"] == "self_service"


def test_directory_says_the_phone_digit_by_digit_and_repeats(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "el teléfono de la consejería de hacienda", "--say", "sí", "--say", "no", "--say", "no")
    assert r["intent"] == "directorio"
    assert sum("nueve, dos, cuatro; cero, cero; dos, cero; cero, dos" in t for t in r["said"]) == 2


def test_hours_today_first(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "a qué hora abren", "--say", "no")
    assert r["said"][2].startswith("Hoy atendemos de 8:30 a 14:30 y de 16:00 a 18:00.")


def test_file_status_by_voice_and_by_keypad(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "quiero saber el estado de mi expediente", "--say",
                 "dos cero dos seis cero cero cero uno dos tres", "--say", "no")
    assert said(r, "pendiente de informe técnico") and r["outcome"] == "self_service"
    r = simulate(capsys, "--say", "quiero saber el estado de mi expediente", "--dtmf", "2026000456#", "--say", "no")
    assert said(r, "resuelto favorablemente")


def test_unknown_file_goes_to_a_person(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "quiero saber el estado de mi expediente", "--dtmf", "99999#")
    assert said(r, "No encuentro el expediente") and r["outcome"] == "queued"


def test_complaint_is_recorded_with_a_reference_said_twice(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "quiero poner una queja", "--say", "me atendieron fatal en la oficina", "--say", "no")
    assert r["intent"] == "queja_sugerencia" and r["ticket"] == "SIMULA"
    assert said(r, "Su referencia es: S, I, M; U, L, A. Repito: S, I, M; U, L, A.")


def test_miespacio_and_procedure(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "cómo me doy de alta en miespacio", "--say", "no")
    assert r["intent"] == "miespacio" and said(r, "Cl@ve")
    r = simulate(capsys, "--say", "requisitos de las ayudas al alquiler de vivienda", "--say", "no")
    assert r["intent"] == "info_tramite" and said(r, "convocatoria anual")


def test_query_status_unknown_reference(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "cómo va mi consulta", "--say", "K7M4PX")
    assert said(r, "No encuentro ninguna consulta con la referencia") and r["outcome"] == "queued"


def test_appointment_and_person_intents_are_queued(capsys: pytest.CaptureFixture[str]) -> None:
    for text in ("quiero pedir cita previa", "quiero hablar con una persona"):
        r = simulate(capsys, "--say", text)
        assert r["outcome"] == "queued" and r["flows"][-1] == "person", text
        assert said(r, "Le paso con una persona.")


@pytest.mark.parametrize("zero", [["--say", "cero"], ["--dtmf", "0"]])
def test_zero_reaches_a_person(capsys: pytest.CaptureFixture[str], zero: list[str]) -> None:
    r = simulate(capsys, *zero)
    assert r["intent"] == "hablar_agente" and r["outcome"] == "queued" and r["flows"] == ["main", "ask", "person"]


def test_no_match_then_menu_then_keyed_choice(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "mi perro se llama toby", "--say", "el tiempo en la playa", "--dtmf", "1", "--say", "no")
    assert said(r, "Perdone, no le he entendido.") and said(r, "Para pagar o consultar la tasa de la ITV, pulse 1.")
    assert r["intent"] == "tasa_itv" and r["outcome"] == "self_service" and "itv" in r["flows"]


def test_no_input_then_person(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys)
    assert said(r, "Perdone, no le he oído.") and r["flows"][-1] == "person"


@pytest.fixture
def always_confirm(tmp_path: Path) -> Path:
    """An admin's policy that confirms every recognised intent (the router's own doubt is tuned elsewhere)."""
    (tmp_path / "ivr.yaml").write_text("policy:\n  confirm_below: 1.0\n", encoding="utf-8")
    return tmp_path


def test_confirmation_yes(capsys: pytest.CaptureFixture[str], always_confirm: Path) -> None:
    r = _result(capsys, main(["simulate", "--config", str(always_confirm), "--at", MONDAY, "--json", "--say",
                              "dónde está la oficina", "--say", "sí", "--say", "badajoz", "--say", "no"]))
    assert said(r, "¿Quiere la dirección o el horario de una oficina? Diga sí o no.")
    assert r["intent"] == "oficinas" and said(r, "Avenida Ejemplo 2, Badajoz")


def test_confirmation_no_then_new_answer(capsys: pytest.CaptureFixture[str], always_confirm: Path) -> None:
    r = _result(capsys, main(["simulate", "--config", str(always_confirm), "--at", MONDAY, "--json", "--say",
                              "dónde está la oficina", "--say", "no", "--say", "quiero pagar la itv", "--say", "sí",
                              "--say", "no"]))
    assert said(r, "¿Quiere la dirección o el horario de una oficina? Diga sí o no.")
    assert r["intent"] == "tasa_itv" and "offices" not in r["flows"]


def test_more_then_a_second_question(capsys: pytest.CaptureFixture[str]) -> None:
    r = simulate(capsys, "--say", "quiero pagar la itv", "--say", "sí", "--say", "a qué hora abren", "--say", "no")
    assert r["flows"] == ["main", "ask", "itv", "more", "next", "hours", "more", "goodbye"]


@pytest.mark.parametrize("at,reason", [(EVENING, ""), (HOLIDAY, " por ser festivo, Inmaculada Concepción")])
def test_closed_line_offers_voicemail(capsys: pytest.CaptureFixture[str], at: str, reason: str) -> None:
    r = simulate(capsys, "--say", "sí", "--say", "llámenme por lo de mi beca, gracias", at=at)
    assert r["calendar"] in ("closed", "holiday") and r["flows"] == ["main", "closed", "voicemail"]
    assert said(r, f"está cerrado{reason}") and said(r, "¿Quiere dejar un mensaje en el buzón de voz?")
    assert r["outcome"] == "voicemail" and r["ticket"] == "SIMULA"
    r = simulate(capsys, "--say", "no", at=at)
    assert r["flows"] == ["main", "closed", "goodbye"] and r["outcome"] == "abandoned"


def test_text_output_and_chat_rendering(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--at", MONDAY, "--say", "quiero pagar la itv", "--say", "no"]) == 0
    out = capsys.readouterr().out
    assert "outcome: self_service" in out and "ask.gather" in out
    r = simulate(capsys, "--channel", "chat", "--say", "quiero pagar la itv", "--say", "No")
    assert said(r, "https://example.org/tramites/itv")
    question = next(m for m in r["messages"] if m["kind"] == "question")
    assert {"key": "1", "label": "pagar o consultar la tasa de la ITV"} in question["options"]


@pytest.mark.anyio
@pytest.mark.parametrize(("asked", "answers", "expect", "never"), [
    ("el teléfono de la agencia tributaria", ["no"], "Ha preguntado por la Agencia Estatal de Administración Tributaria",
     "es el"),
    ("el teléfono del sepe", ["no", "no"], "060", "es el"),
    ("el teléfono del sepe", ["sí", "no"], "El teléfono del Servicio Extremeño Público de Empleo es el", None),
    ("el teléfono del servicio extremeño de salud", ["no", "no"], "El teléfono del Servicio Extremeño de Salud es el", None),
])
async def test_bodies_outside_the_directory_never_get_another_units_number(
        runtime: Runtime, asked: str, answers: list[str], expect: str, never: str | None) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    inputs: list[tuple[InputKind, str]] = [("say", asked), *[("say", a) for a in answers]]
    _, out = await runtime.ivr.simulate(inputs, at=datetime(2026, 12, 9, 10, 0, tzinfo=ZoneInfo("Europe/Madrid")))
    said = " ".join(m.text for m in out)
    assert expect in said, said
    if never is not None:
        assert "El teléfono" not in said or never not in said.split("El teléfono", 1)[1][:80], said
