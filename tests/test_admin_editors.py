"""The admin page's editors over HTTP (real app over ASGI, real Redis): dry-run validation located on each step, the
document as written (YAML round trip), prompts with their placeholders filled and their audio, the simulator on a
draft, step by step, drafts proposed by a supervisor and published by an admin, side-by-side version diffs, and the
intents editor's «probar» and dev-set check."""

from __future__ import annotations

import copy
import io
import json
import shutil
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from atiende.runtime import Runtime
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.anyio
IVR_YAML = Path(__file__).resolve().parent.parent / "config" / "defaults" / "ivr.yaml"
NEW_ANSWER = "Para pedir cita previa, entre en la sede electrónica o llame al 924 00 00 00 de lunes a viernes."


def with_new_option(doc: dict[str, Any]) -> dict[str, Any]:
    """The reference flows plus a keypad option 9 for appointments, answered by a new flow with its own prompt."""
    d = copy.deepcopy(doc)
    d["menus"]["main"].append({"key": "9", "intent": "cita_previa"})
    d["prompts"]["cita_info"] = NEW_ANSWER
    d["routes"]["cita_previa"] = "cita"
    d["flows"]["cita"] = [{"verb": "say", "prompt": "cita_info"}, {"verb": "goto", "flow": "more"}]
    return d


async def _doc(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/api/v1/admin/ivr/flows")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()["document"]
    return doc


async def test_the_document_as_written_round_trips_through_yaml(client: httpx.AsyncClient) -> None:
    """Version 0 comes back with exactly the file's keys, in the file's order, and YAML -> JSON -> YAML keeps it."""
    written = yaml.safe_load(IVR_YAML.read_text(encoding="utf-8"))
    doc = await _doc(client)
    assert json.dumps(doc, ensure_ascii=False) == json.dumps(written, ensure_ascii=False)
    admin = {"X-API-Key": ADMIN_KEY}
    dumped = (await client.post("/desk/api/yaml/dump", json=doc, headers=admin)).json()["yaml"]
    back = await client.post("/desk/api/yaml/parse", content=dumped.encode(),
                             headers={"Content-Type": "application/yaml", **admin})
    assert json.dumps(back.json(), ensure_ascii=False) == json.dumps(written, ensure_ascii=False)
    # The editor's own reads are the same document (supervisors read it there).
    assert (await client.get("/api/v1/editor/flows")).json()["document"] == written


async def test_validation_is_a_dry_run_located_on_each_step(client: httpx.AsyncClient) -> None:
    doc = await _doc(client)
    r = await client.post("/api/v1/admin/ivr/flows/validate", json=doc)
    assert r.json() == {"ok": True, "problems": []}

    bad = copy.deepcopy(doc)
    bad["flows"]["main"][0] = {"verb": "say"}  # neither text nor prompt
    bad["flows"]["ask"][0]["policy"] = {"no_input_retries": "muchos"}
    r = await client.post("/api/v1/editor/flows/validate", json=bad)
    problems = r.json()["problems"]
    assert {(p["flow"], p["step"]) for p in problems} == {("main", 0), ("ask", 0)}, problems
    assert any(p["field"] == "policy.no_input_retries" for p in problems)

    bad = copy.deepcopy(doc)
    bad["flows"]["itv"][1] = {"verb": "goto", "flow": "nowhere"}
    bad["menus"]["main"].append({"key": "1", "intent": "horario"})
    problems = (await client.post("/api/v1/editor/flows/validate", json=bad)).json()["problems"]
    assert {"flow": "itv", "step": 1, "field": "flow",
            "message": "flows.itv[1] (goto): flow 'nowhere' does not exist"} in problems
    assert any(p["field"] == "menus.main" and "twice" in p["message"] for p in problems)

    loop = copy.deepcopy(doc)
    loop["flows"]["goodbye"] = [{"verb": "say", "prompt": "goodbye"}, {"verb": "goto", "flow": "more"}]
    loop["flows"]["more"][1] = {"verb": "goto", "flow": "goodbye"}
    problems = (await client.post("/api/v1/editor/flows/validate", json=loop)).json()["problems"]
    located = {(p["flow"], p["step"]) for p in problems if "loop without exit" in p["message"]}
    assert ("goodbye", 1) in located and ("more", 1) in located and (None, None) in located
    # nothing of this was stored
    versions = (await client.get("/api/v1/admin/ivr/flows/versions")).json()["versions"]
    assert [v["version"] for v in versions] == [0]


async def test_prompts_list_every_text_with_real_values(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/editor/prompts")
    body = r.json()
    prompts = {p["key"]: p for p in body["prompts"]}
    assert set(prompts) == set(yaml.safe_load(IVR_YAML.read_text(encoding="utf-8"))["prompts"])
    closed = prompts["closed"]
    assert closed["placeholders"] == ["closed_reason", "hours", "next_open"]
    assert "{hours}" not in closed["preview"] and body["values"]["hours"] in closed["preview"]
    assert {"flow": "closed", "step": 0} in closed["used_by"]
    assert {"flow": "ask", "step": 0} in prompts["no_match"]["used_by"]  # through the default policy
    r = await client.post("/api/v1/editor/prompts/preview", json={"text": "Su referencia es {reference}. {nadie}"})
    assert r.json()["preview"].startswith("Su referencia es K7M-4PX.") and r.json()["unknown"] == ["nadie"]
    assert (await client.post("/api/v1/editor/prompts/preview", json={"text": "x" * 1001})).status_code == 422


async def test_listen_renders_the_prompt_as_wav(client: httpx.AsyncClient, runtime: Runtime,
                                                staff: dict[str, str]) -> None:
    """A prompt of the flows in force is rendered into the prompt cache the line plays it from; any other text is
    rendered for the answer only, so the editors cannot fill the cache's disk (or push the line's prompts out of
    its memory) with texts of their own. Supervisors and admins listen; agents may not."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    closed = yaml.safe_load(IVR_YAML.read_text(encoding="utf-8"))["prompts"]["closed"]
    r = await client.get("/api/v1/editor/prompts/audio", params={"text": closed})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        seconds = w.getnframes() / w.getframerate()
    assert seconds > 1.0 and abs(float(r.headers["x-duration-s"]) - seconds) < 0.02
    cached = set((runtime.data_dir / "prompts").glob("*.wav"))
    assert len(cached) == 1, "the prompt cache rendered the flows' prompt"

    typed = "Texto de prueba que ningún flujo dice: {hours}."
    r = await client.get("/api/v1/editor/prompts/audio", params={"text": typed})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert w.getnframes() / w.getframerate() > 1.0
    assert set((runtime.data_dir / "prompts").glob("*.wav")) == cached, "a typed text left no file"
    values = (await client.get("/api/v1/editor/prompts")).json()["values"]
    assert runtime.speech.cache.peek(typed.replace("{hours}", values["hours"])) is None, "nor an entry in memory"
    assert (await client.get("/api/v1/editor/prompts/audio", params={"text": " "})).status_code == 422

    login = await client.post("/api/v1/auth/login", json={"username": "ana", "password": staff["password"]})
    ana = {"Authorization": f"Bearer {login.json()['token']}"}
    assert (await client.get("/api/v1/editor/prompts/audio", params={"text": typed}, headers=ana)).status_code == 403


async def test_simulator_runs_a_draft_step_by_step_and_stores_nothing(client: httpx.AsyncClient) -> None:
    draft = with_new_option(await _doc(client))
    at = "2026-11-23T10:00:00+01:00"
    # first turn: no input yet, the IVR waits at the main question
    r = await client.post("/api/v1/simulate", json={"flows": draft, "at": at, "stop_when_waiting": True})
    body = r.json()
    assert body["waiting"] and body["draft"] and body["messages"][-1]["kind"] == "question"
    assert {"key": "9", "label": "pedir, cambiar o anular una cita previa"} in body["messages"][-1]["options"]
    # the caller presses 9: the draft's new answer
    r = await client.post("/api/v1/simulate", json={"flows": draft, "at": at, "stop_when_waiting": True,
                                                     "inputs": [{"dtmf": "9"}]})
    body = r.json()
    assert body["intent"] == "cita_previa" and [m["text"] for m in body["messages"]].count(NEW_ANSWER) == 1
    flows = [p["flow"] for p in body["path"]]
    assert flows[:4] == ["main", "main", "main", "ask"] and "cita" in flows
    # the flows in force do not know it
    r = await client.post("/api/v1/simulate", json={"at": at, "inputs": [{"dtmf": "9"}]})
    assert NEW_ANSWER not in [m["text"] for m in r.json()["messages"]]
    # a broken draft is refused with the reasons
    broken = copy.deepcopy(draft)
    broken["flows"]["cita"][1] = {"verb": "goto", "flow": "nada"}
    r = await client.post("/api/v1/simulate", json={"flows": broken, "inputs": []})
    assert r.status_code == 422 and "nada" in r.text
    assert [v["version"] for v in (await client.get("/api/v1/admin/ivr/flows/versions")).json()["versions"]] == [0]


async def test_simulator_routes_with_a_draft_routing(client: httpx.AsyncClient) -> None:
    routing = (await client.get("/api/v1/editor/routing")).json()["document"]
    said = [{"say": "quiero hablar del perro toby"}]
    before = (await client.post("/api/v1/simulate", json={"inputs": said, "channel": "chat",
                                                           "stop_when_waiting": True})).json()
    assert before["intent"] is None
    draft = copy.deepcopy(routing)
    next(i for i in draft["intents"] if i["id"] == "horario")["keywords"]["perro toby"] = 0.95
    after = (await client.post("/api/v1/simulate", json={"inputs": said, "channel": "chat", "routing": draft,
                                                          "stop_when_waiting": True})).json()
    assert after["intent"] == "horario" and after["confidence"] > 0.5


async def test_a_supervisor_proposes_and_an_admin_publishes(client: httpx.AsyncClient, runtime: Runtime) -> None:
    sup = {"X-API-Key": await runtime.desk.auth.create_api_key("sup", ["supervisor"])}
    agent = {"X-API-Key": await runtime.desk.auth.create_api_key("n1", ["agent_n1"])}
    draft = with_new_option(await _doc(client))
    assert (await client.get("/api/v1/editor/flows", headers=agent)).status_code == 403
    assert (await client.put("/api/v1/admin/ivr/flows", json=draft, headers=sup)).status_code == 403
    r = await client.post("/api/v1/editor/drafts/ivr", json={"document": draft, "note": "cita previa"}, headers=sup)
    assert r.status_code == 200, r.text
    draft_id = r.json()["id"]
    assert r.json()["author"] == "apikey:sup" or "sup" in r.json()["author"]
    broken = copy.deepcopy(draft)
    broken["flows"]["cita"] = [{"verb": "say"}]
    assert (await client.post("/api/v1/editor/drafts/ivr", json={"document": broken}, headers=sup)).status_code == 422
    listed = (await client.get("/api/v1/editor/drafts/ivr", headers=sup)).json()["drafts"]
    assert [d["id"] for d in listed] == [draft_id] and "document" not in listed[0]
    assert (await client.post(f"/api/v1/admin/drafts/ivr/{draft_id}/publish", headers=sup)).status_code == 403
    r = await client.post(f"/api/v1/admin/drafts/ivr/{draft_id}/publish")
    assert r.status_code == 200 and r.json()["version"] == 1
    versions = (await client.get("/api/v1/admin/ivr/flows/versions")).json()["versions"]
    assert versions[-1]["active"] and "cita previa" in versions[-1]["note"] and versions[-1]["actor"] != "sup"
    assert (await client.get("/api/v1/editor/drafts/ivr", headers=sup)).json()["drafts"] == []
    assert (await client.post(f"/api/v1/admin/drafts/ivr/{draft_id}/publish")).status_code == 404
    doc = (await client.get("/api/v1/admin/ivr/flows")).json()["flows"]
    assert doc["prompts"]["cita_info"] == NEW_ANSWER


async def test_versions_side_by_side_and_rollback(client: httpx.AsyncClient) -> None:
    draft = with_new_option(await _doc(client))
    assert (await client.put("/api/v1/admin/ivr/flows", json=draft, params={"note": "opción 9"})).status_code == 200
    r = await client.get("/api/v1/admin/versions/flows/diff", params={"a": 0, "b": 1})
    body = r.json()
    assert body["a"]["version"] == 0 and body["b"]["note"] == "opción 9" and body["b"]["at"]
    added = [row["b"] for row in body["rows"] if row["op"] != "equal" and row["b"]]
    assert any(NEW_ANSWER[:30] in line for line in added), added
    assert all(row["a"] == row["b"] for row in body["rows"] if row["op"] == "equal")
    prompts = (await client.get("/api/v1/admin/versions/prompts/diff", params={"a": 0, "b": 1})).json()
    assert prompts["changed"] == 1 and any("cita_info" in (row["b"] or "") for row in prompts["rows"])
    assert (await client.get("/api/v1/admin/versions/flows/diff", params={"a": 0, "b": 7})).status_code == 404
    for section in ("routing", "calendar"):
        same = (await client.get(f"/api/v1/admin/versions/{section}/diff", params={"a": 0, "b": 0})).json()
        assert same["changed"] == 0 and same["rows"]
    assert (await client.post("/api/v1/admin/ivr/flows/rollback", json={"version": 0})).json()["version"] == 2
    again = (await client.get("/api/v1/admin/versions/flows/diff", params={"a": 1, "b": 2})).json()
    assert again["changed"] > 0 and again["b"]["note"] == "rollback to version 0"


async def test_probar_scores_every_intent_and_names_the_words(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/editor/routing/try", json={"text": "quiero pagar la tasa de la itv"})
    body = r.json()
    assert body["intent"] == "tasa_itv" and body["scores"][0]["intent"] == "tasa_itv"
    assert len(body["scores"]) == 12
    assert {"keys", "weight"} <= set(body["scores"][0]["keywords"][0])
    assert {"itv", "tasa", "pagar"} <= {k["word"] for k in body["scores"][0]["keywords"]}
    assert body["scores"][0]["score"] >= body["scores"][1]["score"]


async def test_a_change_is_checked_on_the_dev_set(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/api/v1/editor/routing")).json()["document"]
    same = (await client.post("/api/v1/editor/routing/check", json={"config": doc})).json()
    assert same["samples"] >= 100 and same["accuracy_before"] == same["accuracy_after"] and not same["worse"]
    assert same["accuracy_before"] > 0.8
    worse = copy.deepcopy(doc)
    next(i for i in worse["intents"] if i["id"] == "hablar_agente")["keywords"]["quiero"] = 0.95
    check = (await client.post("/api/v1/editor/routing/check", json={"config": worse})).json()
    assert check["worse"] and check["accuracy_after"] < check["accuracy_before"]
    assert any(c["effect"] == "lost" and c["after"] == "hablar_agente" for c in check["changed"])
    bad = copy.deepcopy(doc)
    bad["intents"][0]["keywords"]["itv"] = 3
    assert (await client.post("/api/v1/editor/routing/check", json={"config": bad})).status_code == 422
