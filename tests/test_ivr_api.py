"""IVR over HTTP and with the real desk: flow edits (422 reasons, versions, rollback, a live call keeps its
version), simulation, call records and the containment figure, tickets from complaints, status of a query."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from ivr.textio import ScriptedIO


@pytest.fixture
async def admin(runtime: Runtime) -> dict[str, str]:
    key = await runtime.desk.auth.create_api_key("ivr-tests", ["admin"])
    return {"X-API-Key": key}


async def _flows(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    r = await client.get("/api/v1/admin/ivr/flows", headers=admin)
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()["flows"]
    return doc


@pytest.mark.anyio
async def test_invalid_flows_are_refused_with_the_reason(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    base = await _flows(client, admin)
    cases = {
        "unknown step": ({"main": [{"verb": "dance"}]}, "dance"),
        "missing target": ({"main": [{"verb": "goto", "flow": "nowhere"}]}, "flow 'nowhere' does not exist"),
        "loop": ({"main": [{"verb": "say", "text": "a"}, {"verb": "goto", "flow": "main"}]}, "loop without exit"),
    }
    for name, (flows, reason) in cases.items():
        doc = copy.deepcopy(base)
        doc["flows"].update(flows)
        r = await client.put("/api/v1/admin/ivr/flows", json=doc, headers=admin)
        assert r.status_code == 422, name
        assert reason in str(r.json()), (name, r.json())
    r = await client.get("/api/v1/admin/ivr/flows/versions", headers=admin)
    assert [v["version"] for v in r.json()["versions"]] == [0]  # nothing refused was stored
    assert (await client.put("/api/v1/admin/ivr/flows", json=base,
                             headers={"Authorization": "Bearer not-a-session"})).status_code == 401


@pytest.mark.anyio
async def test_edit_takes_effect_on_the_next_call_while_a_live_call_keeps_its_version(
        runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    # A chat is a live contact we can pause between turns.
    conv, first = await runtime.ivr.start_chat("+34600111222")
    assert first[0].text.startswith("Bienvenido")

    doc = await _flows(client, admin)
    doc["prompts"]["welcome"] = "Hola, ha llamado al servicio de {line_name}."
    doc["prompts"]["more_question"] = "¿Necesita algo más? Diga sí o no."
    r = await client.put("/api/v1/admin/ivr/flows", json=doc, headers=admin, params={"note": "nuevo saludo"})
    assert r.status_code == 200 and r.json()["version"] == 1

    # the live contact goes on with version 0 ...
    replies = await conv.reply("quiero pagar la itv")
    assert any(m.text == "¿Puedo ayudarle en algo más? Diga sí o no." for m in replies)
    await conv.reply("no")
    # ... the next one starts with version 1
    session, out = await runtime.ivr.simulate([("say", "quiero pagar la itv"), ("say", "no")])
    assert out[0].text == "Hola, ha llamado al servicio de Atención a la Ciudadanía." and session.flows_version == 1
    assert any(m.text == "¿Necesita algo más? Diga sí o no." for m in out)

    # versions and rollback
    r = await client.get("/api/v1/admin/ivr/flows/versions", headers=admin)
    versions = r.json()["versions"]
    assert [v["version"] for v in versions] == [0, 1] and versions[1]["note"] == "nuevo saludo" and versions[1]["active"]
    r = await client.post("/api/v1/admin/ivr/flows/rollback", json={"version": 0}, headers=admin)
    assert r.status_code == 200 and r.json()["version"] == 2
    session, out = await runtime.ivr.simulate([("say", "cero")])
    assert out[0].text.startswith("Bienvenido") and session.flows_version == 2
    r = await client.get("/api/v1/admin/ivr/flows/versions/1", headers=admin)
    assert r.json()["flows"]["prompts"]["welcome"].startswith("Hola")


@pytest.mark.anyio
async def test_simulate_endpoint(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {"at": "2026-12-08T10:00:00+01:00", "inputs": [{"say": "no"}]}
    r = await client.post("/api/v1/simulate", json=body, headers=admin)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["calendar"] == "holiday" and got["outcome"] == "abandoned"
    assert [p["flow"] for p in got["path"]][:2] == ["main", "main"] and got["path"][1]["detail"]["value"] == "holiday"
    r = await client.post("/api/v1/simulate", json={"inputs": [{"say": "x", "dtmf": "1"}]}, headers=admin)
    assert r.status_code == 422


@pytest.mark.anyio
async def test_call_records_and_containment(runtime: Runtime, client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    scripts: list[list[Any]] = [
        [("say", "quiero pagar la itv"), ("say", "no")],  # self-service
        [("say", "a qué hora abren"), ("say", "no")],  # self-service
        [("say", "quiero saber el estado de mi expediente"), ("dtmf", "123#")],  # unknown file -> person
        [("say", "quiero hablar con una persona")],  # not eligible
    ]
    ids = []
    for script in scripts:
        session = await runtime.ivr.run(ScriptedIO(script))
        ids.append(session.call_id)
    r = await client.get("/api/v1/calls", headers=admin)
    assert r.status_code == 200
    calls = r.json()["calls"]
    assert {c["call_id"] for c in calls} == set(ids)
    r = await client.get(f"/api/v1/calls/{ids[0]}", headers=admin)
    rec = r.json()
    assert rec["intent"] == "tasa_itv" and rec["outcome"] == "self_service" and rec["caller"] == "+34600000000"
    assert rec["path"][0]["verb"] == "say" and "ms" in rec["path"][0]
    assert rec["transcripts"][0]["text"] == "quiero pagar la itv" and rec["transcripts"][0]["confidence"] == 1.0
    r = await client.get("/api/v1/calls", params={"outcome": "queued"}, headers=admin)
    assert {c["call_id"] for c in r.json()["calls"]} == {ids[2], ids[3]}
    r = await client.get("/api/v1/calls/containment", headers=admin)
    assert r.json()["eligible"] == 3 and r.json()["self_service"] == 2 and r.json()["containment"] == 0.667
    assert (await client.get("/api/v1/calls/nope", headers=admin)).status_code == 404


@pytest.mark.anyio
async def test_complaint_becomes_an_n2_ticket_and_its_status_can_be_asked(runtime: Runtime) -> None:
    session = await runtime.ivr.run(ScriptedIO([("say", "quiero poner una queja"),
                                                ("say", "la oficina de Mérida estaba cerrada en horario de apertura"),
                                                ("say", "no")]))
    ref = session.ticket_ref
    assert ref and session.outcome == "self_service"
    ticket = await runtime.desk.tickets.get(ref)
    assert ticket.queue == "N2" and ticket.kind == "complaint" and "cerrada" in ticket.body
    assert ticket.trace_id == session.trace_id
    spelled = ", ".join(ref[:3]) + "; " + ", ".join(ref[3:])
    assert any(f"Su referencia es: {spelled}. Repito: {spelled}." in t for t in session.said)
    # a later chat asks for its status with the reference
    later = await runtime.ivr.run(ScriptedIO([("say", "cómo va mi queja"), ("say", ref), ("say", "no")], channel="chat"))
    assert later.outcome == "self_service" and any("pendiente" in t or "registró" in t for t in later.said)


@pytest.mark.anyio
async def test_closed_line_hands_the_caller_to_the_voicemail_hook(runtime: Runtime) -> None:
    """The `voicemail` verb calls the voicemail area's hook (its recording and ticket are tested there)."""
    from datetime import datetime

    from core.clock import FixedClock
    from tests.conftest import MADRID

    runtime.clock = FixedClock(datetime(2026, 12, 4, 19, 0, tzinfo=MADRID))  # Friday evening before a long weekend
    session = await runtime.ivr.run(ScriptedIO([("say", "sí"), ("say", "Soy Ana, llámenme por mi beca, gracias")]))
    assert session.calendar_state == "closed" and session.outcome == "voicemail"
    assert [p.verb for p in session.path][-1] == "voicemail"


@pytest.mark.anyio
async def test_queue_overflow_offers_voicemail_and_leaves_the_queue_clean(runtime: Runtime) -> None:
    io = ScriptedIO([("say", "quiero hablar con una persona"), ("say", "no")], clock=runtime.clock)
    session = await runtime.ivr.run(io)
    enqueue = next(p for p in session.path if p.verb == "enqueue")
    assert enqueue.detail["wait"] == "overflow" and enqueue.detail["position"] == 1
    assert [p.flow for p in session.path][-3:] == ["closed_offer", "goodbye", "goodbye"]
    assert any("siguen ocupadas" in t for t in session.said)
    assert await runtime.store.redis.zcard(runtime.store.keys.calls_waiting("N1")) == 0
