"""The learning loop (issue 17.6) over HTTP with real call records: contacts run through the real engine and saved to
the real Redis; the page's API groups what was not understood, confirmed or denied (with counts, confidence and each
contact's trace) and the confusions between intents; «teach» adds a phrase or keyword as a new routing version checked
on the dev set (refused when worse unless confirmed) and the usual rollback undoes it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from ivr.contact import Ask, Choice, Heard
from ivr.textio import ScriptedIO

pytestmark = pytest.mark.anyio
DOG = "mi perro se llama toby"


async def _contacts(rt: Runtime) -> None:
    # not understood twice, then the keypad menu: 7 (hours)
    await rt.ivr.simulate([("say", DOG), ("say", DOG), ("dtmf", "7")], save=True, dry_run=True, caller="+34600000001")
    # "pagar" is doubtful: "¿Quiere pagar o consultar la tasa de la ITV?" - "no" - then an appointment
    await rt.ivr.simulate([("say", "pagar"), ("say", "no"), ("say", "quiero pedir una cita previa")], save=True,
                          dry_run=True, caller="+34600000002")
    await rt.ivr.simulate([("say", "pagar"), ("dtmf", "2"), ("say", "necesito cita previa")], save=True,
                          dry_run=True, caller="+34600000003")
    # doubtful, confirmed
    await rt.ivr.simulate([("say", "información"), ("say", "sí")], save=True, dry_run=True, caller="+34600000005")
    # by chat the same word is not enough to pick an intent (no confirmation there): not understood
    await rt.ivr.simulate([("say", "información")], channel="chat", save=True, dry_run=True, caller="web:abc")
    # understood at once: nothing to learn
    await rt.ivr.simulate([("say", "quiero pagar la tasa de la itv")], save=True, dry_run=True, caller="+34600000004")


CHOICE = Choice(value="sí", margin=4.2, transcribed="C,")


class _Garbled(ScriptedIO):
    """A caller whose "sí" the phone recogniser transcribed as "C," and chose from the expected answers: a gather
    answered "C," is heard as CallIO hands over such a ListenResult."""

    async def gather(self, ask: Ask) -> Heard:
        heard = await super().gather(ask)
        if heard.text == "C,":
            return Heard(kind="speech", text="sí", confidence=0.7, engine="whisper", chosen=CHOICE)
        return heard


def chosen_yes() -> ScriptedIO:
    """"información" (doubtful: "¿Quiere …?") confirmed by a "sí" chosen by comparison."""
    return _Garbled([("say", "información"), ("say", "C,")], caller="+34600000006")


async def _report(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/api/v1/admin/learning")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_the_page_groups_what_was_not_understood_confirmed_or_denied(runtime: Runtime,
                                                                            client: httpx.AsyncClient) -> None:
    await _contacts(runtime)
    report = await _report(client)
    assert report["contacts"] == 6

    groups = {(g["text"], tuple(g["channels"])): g for g in report["not_understood"]}
    assert set(groups) == {(DOG, ("voice",)), ("información", ("chat",))}, report["not_understood"]
    dog = report["not_understood"][0]  # the most frequent first
    assert dog["text"] == DOG and dog["count"] == 2 and dog["final_intent"] == "horario"
    assert dog["router_now"]["intent"] is None and dog["channels"] == {"voice": 2}
    assert len(dog["contacts"]) == 2 and all(c["trace_id"] and c["call_id"] for c in dog["contacts"])

    [denied] = report["denied"]
    assert denied["text"] == "pagar" and denied["count"] == 2 and denied["router_now"]["intent"] == "tasa_itv"
    assert denied["final_intent"] == "cita_previa"
    assert report["confusions"] == [{"proposed": "tasa_itv", "wanted": "cita_previa", "count": 2, "examples": ["pagar"]}]

    [confirmed] = report["confirmed"]
    assert confirmed["text"] == "información" and confirmed["channels"] == {"voice": 1}
    assert confirmed["final_intent"] == "info_tramite" and confirmed["router_now"]["intent"] == "info_tramite"
    # the contact's trace is the one its record carries
    rec = await runtime.calls.get(dog["contacts"][0]["call_id"])
    assert rec.trace_id == dog["contacts"][0]["trace_id"]

    # a staff member who is not an admin does not see it
    agent = {"X-API-Key": await runtime.desk.auth.create_api_key("n1", ["agent_n1"])}
    assert (await client.get("/api/v1/admin/learning", headers=agent)).status_code == 403


async def test_teaching_a_phrase_makes_a_new_version_that_rolls_back(runtime: Runtime, client: httpx.AsyncClient) -> None:
    await _contacts(runtime)
    r = await client.post("/api/v1/admin/learning/teach", json={"intent": "horario", "phrase": DOG})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 1 and body["check"]["samples"] >= 100 and not body["check"]["worse"]
    versions = (await client.get("/api/v1/admin/routing/versions")).json()
    assert versions[-1]["active"] and versions[-1]["note"] == f"aprendizaje: frase «{DOG}» → horario"
    assert versions[-1]["actor"] == "apikey:test-admin" or "test-admin" in versions[-1]["actor"]
    assert (await runtime.router.route(DOG)).intent == "horario"
    dog = next(g for g in (await _report(client))["not_understood"] if g["text"] == DOG)
    assert dog["router_now"]["intent"] == "horario"  # the page shows what the router does now

    # the same phrase twice is refused; the usual rollback undoes the lesson
    again = await client.post("/api/v1/admin/learning/teach", json={"intent": "horario", "phrase": DOG.upper()})
    assert again.status_code == 422
    assert (await client.post("/api/v1/admin/routing/rollback", json={"version": 0})).json()["version"] == 2
    assert (await runtime.router.route(DOG)).intent is None


async def test_a_lesson_that_makes_the_dev_set_worse_needs_confirmation(runtime: Runtime,
                                                                       client: httpx.AsyncClient) -> None:
    worse = {"intent": "hablar_agente", "keyword": "quiero", "weight": 0.95}
    r = await client.post("/api/v1/admin/learning/teach", json=worse)
    assert r.status_code == 409, r.text
    check = r.json()["details"]["check"]
    assert check["worse"] and check["accuracy_after"] < check["accuracy_before"]
    assert [v["version"] for v in (await client.get("/api/v1/admin/routing/versions")).json()] == [0]
    r = await client.post("/api/v1/admin/learning/teach", json={**worse, "confirm_worse": True})
    assert r.status_code == 200 and r.json()["version"] == 1
    assert "palabra clave «quiero» (+0.95)" in r.json()["added"]


@pytest.mark.parametrize("body, status", [
    ({"intent": "horario"}, 422),
    ({"intent": "horario", "phrase": "a b", "keyword": "x y"}, 422),
    ({"intent": "no_existe", "phrase": "hola que tal"}, 404),
    ({"intent": "horario", "keyword": "¿?¡!", "weight": 0.5}, 422),  # only punctuation: the router refuses it
    ({"intent": "horario", "keyword": "horas", "weight": 1.5}, 422),
    ({"intent": "horario", "phrase": "x" * 301}, 422),
])
async def test_bad_lessons_are_refused_and_nothing_is_stored(client: httpx.AsyncClient, body: dict[str, Any],
                                                             status: int) -> None:
    r = await client.post("/api/v1/admin/learning/teach", json=body)
    assert r.status_code == status, r.text
    assert [v["version"] for v in (await client.get("/api/v1/admin/routing/versions")).json()] == [0]


async def test_a_yes_chosen_from_the_expected_answers_shows_with_what_was_transcribed(
        runtime: Runtime, client: httpx.AsyncClient) -> None:
    """Issue 17 (7): a "sí" over the phone transcribed as "C," and picked by comparing the audio with the expected
    answers (`speech.stt.ClosedSet`) is recorded as such on its turn, and the learning page says so on the contact."""
    done = await runtime.ivr.run(chosen_yes())
    [confirm] = [t for t in done.transcripts if t.step == "confirm"]
    assert (confirm.text, confirm.chosen) == ("sí", CHOICE)
    assert (await runtime.calls.get(done.call_id)).transcripts[-1].chosen == CHOICE  # in the call record
    [confirmed] = (await _report(client))["confirmed"]
    assert confirmed["text"] == "información" and confirmed["answers_chosen"] == 1
    assert confirmed["contacts"][0]["answer_chosen"] == {"value": "sí", "margin": 4.2, "transcribed": "C,"}
