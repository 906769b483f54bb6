"""Review findings on the editable configuration (real app over ASGI, real Redis): a queue the desk does not have is
refused wherever a routing or flows document is saved, proposed, checked, simulated or rolled back to (it failed every
contact afterwards); a draft made over an older version is not published over a newer one unless forced; concurrent
edits do not lose each other (compare-and-set in core/versioned.py) and «Deshacer» undoes only its own change; the
intents editor's helpers have size limits."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from core.errors import InvalidInput

pytestmark = pytest.mark.anyio


async def _routing(client: httpx.AsyncClient) -> dict[str, Any]:
    doc: dict[str, Any] = (await client.get("/api/v1/editor/routing")).json()["document"]
    return doc


async def _flows(client: httpx.AsyncClient) -> dict[str, Any]:
    doc: dict[str, Any] = (await client.get("/api/v1/admin/ivr/flows")).json()["document"]
    return doc


def _intent(doc: dict[str, Any], intent_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(i for i in doc["intents"] if i["id"] == intent_id)
    return found


def _ghost_queue(doc: dict[str, Any]) -> dict[str, Any]:
    """The flows with every enqueue and voicemail step handing over to a queue the desk does not have."""
    d = copy.deepcopy(doc)
    for steps in d["flows"].values():
        for s in steps:
            if s.get("verb") in ("enqueue", "voicemail"):
                s["queue"] = "FANTASMA"
    return d


async def _supervisor(runtime: Runtime) -> dict[str, str]:
    return {"X-API-Key": await runtime.desk.auth.create_api_key("sup", ["supervisor"])}


def _refused_for_queue(r: httpx.Response) -> None:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error_id"] == "unknown-queue" and "«FANTASMA»" in body["message"] and "no existe" in body["message"]


async def test_an_intent_handing_over_to_a_queue_the_desk_lacks_is_refused_everywhere(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    doc = await _routing(client)
    _intent(doc, "queja_sugerencia")["queue"] = "FANTASMA"
    _refused_for_queue(await client.put("/api/v1/admin/routing", json=doc))
    _refused_for_queue(await client.post("/api/v1/editor/routing/check", json={"config": doc}))
    _refused_for_queue(await client.post("/api/v1/editor/routing/try", json={"text": "una queja", "config": doc}))
    _refused_for_queue(await client.post("/api/v1/simulate", json={"routing": doc, "channel": "chat",
                                                                   "inputs": [{"say": "quiero poner una queja"}]}))
    _refused_for_queue(await client.post("/api/v1/editor/drafts/routing", json={"document": doc},
                                         headers=await _supervisor(runtime)))
    one = {**_intent(doc, "queja_sugerencia")}
    one.pop("id")
    _refused_for_queue(await client.put("/api/v1/admin/routing/intents/queja_sugerencia", json=one))
    # A draft stored before this check (or by hand) is checked again when it is published.
    await runtime.store.put_draft("routing", "d0", json.dumps({"id": "d0", "section": "routing", "author": "x",
                                                              "at": "", "note": "", "base_version": 0, "document": doc}))
    _refused_for_queue(await client.post("/api/v1/admin/drafts/routing/d0/publish"))
    assert [v["version"] for v in (await client.get("/api/v1/admin/routing/versions")).json()] == [0]


async def test_the_routing_service_itself_refuses_a_queue_the_desk_lacks(client: httpx.AsyncClient,
                                                                       runtime: Runtime) -> None:
    """Not only the HTTP resources: every write through `RouterService` (CLI, learning loop, drafts) is checked."""
    doc = await _routing(client)
    _intent(doc, "queja_sugerencia")["queue"] = "FANTASMA"
    svc = runtime.router
    for attempt in (svc.put(doc, "admin"), svc.compile_draft(doc)):
        with pytest.raises(InvalidInput, match="FANTASMA") as refused:
            await attempt
        assert refused.value.error_id == "unknown-queue"
    _intent(doc, "queja_sugerencia")["queue"] = "N2"
    assert await svc.put(doc, "admin") == 1
    queues = runtime.settings.desk.queues
    queues[:] = [q for q in queues if q.id != "N2"]
    with pytest.raises(InvalidInput, match="N2"):
        await svc.rollback(1, "admin")
    assert (await svc.config())[0] == 1


async def test_the_flows_section_itself_refuses_a_queue_the_desk_lacks(client: httpx.AsyncClient,
                                                                      runtime: Runtime) -> None:
    doc = _ghost_queue(await _flows(client))
    with pytest.raises(InvalidInput, match="FANTASMA") as refused:
        await runtime.flows.put(doc, "admin")
    assert refused.value.error_id == "unknown-queue"
    assert (await runtime.flows.current())[0] == 0


async def test_a_flow_step_handing_over_to_a_queue_the_desk_lacks_is_refused_everywhere(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    doc = _ghost_queue(await _flows(client))
    _refused_for_queue(await client.put("/api/v1/admin/ivr/flows", json=doc))
    _refused_for_queue(await client.post("/api/v1/simulate", json={"flows": doc, "inputs": [{"dtmf": "0"}]}))
    _refused_for_queue(await client.post("/api/v1/editor/drafts/ivr", json={"document": doc},
                                         headers=await _supervisor(runtime)))
    r = (await client.post("/api/v1/editor/flows/validate", json=doc)).json()
    assert not r["ok"]
    on_queue = [p for p in r["problems"] if p["field"] == "queue"]
    assert on_queue and all("«FANTASMA» no existe" in p["message"] and p["flow"] and p["step"] is not None
                            for p in on_queue)
    assert [v["version"] for v in (await client.get("/api/v1/admin/ivr/flows/versions")).json()["versions"]] == [0]


async def test_the_dry_run_hooks_refuse_a_queue_the_desk_lacks(runtime: Runtime) -> None:
    from ivr.contact import Session
    from ivr.hooks import DryRunHooks

    hooks = DryRunHooks.make(queues=["N1", "N2"])
    session = Session(call_id="c", trace_id="t", started_at=runtime.clock.now())
    assert (await hooks.queue.enqueue(session, "N1")).queue == "N1"
    with pytest.raises(InvalidInput, match="FANTASMA"):
        await hooks.queue.enqueue(session, "FANTASMA")
    with pytest.raises(InvalidInput, match="FANTASMA"):
        await hooks.tickets.create(session, queue="FANTASMA", kind="call", subject="s", body="b")


async def test_a_rollback_to_a_version_naming_a_queue_since_removed_is_refused(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    routing, flows = await _routing(client), await _flows(client)

    def to_n2(doc: dict[str, Any]) -> dict[str, Any]:
        d = _ghost_queue(doc)
        for steps in d["flows"].values():
            for s in steps:
                if s.get("queue") == "FANTASMA":
                    s["queue"] = "N2"
        return d

    assert (await client.put("/api/v1/admin/routing", json=routing)).json()["version"] == 1  # names N1 and N2
    assert (await client.put("/api/v1/admin/ivr/flows", json=to_n2(flows))).json()["version"] == 1
    for i in routing["intents"]:
        i["queue"] = "N1"
    assert (await client.put("/api/v1/admin/routing", json=routing)).json()["version"] == 2
    assert (await client.put("/api/v1/admin/ivr/flows", json=flows)).json()["version"] == 2  # only N1
    queues = runtime.settings.desk.queues
    queues[:] = [q for q in queues if q.id != "N2"]  # the desk no longer has N2

    for path in ("/api/v1/admin/routing/rollback", "/api/v1/admin/ivr/flows/rollback"):
        r = await client.post(path, json={"version": 1})
        assert r.status_code == 422, r.text
        assert r.json()["error_id"] == "unknown-queue" and "«N2»" in r.json()["message"], r.text
    assert (await client.get("/api/v1/admin/routing")).json()["version"] == 2
    assert (await client.get("/api/v1/admin/ivr/flows")).json()["version"] == 2


async def test_a_draft_made_over_an_older_version_is_not_published_over_a_newer_one(
        client: httpx.AsyncClient, runtime: Runtime) -> None:
    sup = await _supervisor(runtime)
    doc = await _routing(client)
    d = await client.post("/api/v1/editor/drafts/routing", json={"document": doc, "note": "borrador"}, headers=sup)
    assert d.status_code == 200 and d.json()["base_version"] == 0
    taught = await client.post("/api/v1/admin/learning/teach",
                               json={"intent": "tasa_itv", "phrase": "frase nueva del admin", "confirm_worse": True})
    assert taught.status_code == 200 and taught.json()["version"] == 1

    r = await client.post(f"/api/v1/admin/drafts/routing/{d.json()['id']}/publish")
    assert r.status_code == 409, r.text
    assert r.json()["error_id"] == "draft-outdated" and "versión 0" in r.json()["message"]
    assert r.json()["details"] == {"base_version": 0, "current": 1}
    assert "frase nueva del admin" in _intent(await _routing(client), "tasa_itv")["phrases"]  # nothing replaced
    assert len((await client.get("/api/v1/editor/drafts/routing", headers=sup)).json()["drafts"]) == 1

    r = await client.post(f"/api/v1/admin/drafts/routing/{d.json()['id']}/publish", params={"force": "true"})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["replaced"] == 1, r.text
    assert "frase nueva del admin" not in _intent(await _routing(client), "tasa_itv")["phrases"]


async def test_publishing_a_routing_draft_runs_the_dev_set_check(client: httpx.AsyncClient, runtime: Runtime) -> None:
    doc = await _routing(client)
    doc["threshold"] = 0.99  # almost nothing is recognised: the dev set gets much worse
    d = await client.post("/api/v1/editor/drafts/routing", json={"document": doc},
                          headers=await _supervisor(runtime))
    assert d.status_code == 200, d.text
    r = await client.post(f"/api/v1/admin/drafts/routing/{d.json()['id']}/publish")
    assert r.status_code == 409 and r.json()["error_id"] == "dev-set-worse", r.text
    assert r.json()["details"]["check"]["worse"]
    r = await client.post(f"/api/v1/admin/drafts/routing/{d.json()['id']}/publish", params={"confirm_worse": "true"})
    assert r.status_code == 200 and r.json()["version"] == 1, r.text


async def test_concurrent_teaches_keep_every_phrase(client: httpx.AsyncClient) -> None:
    phrases = [f"frase concurrente numero {n}" for n in range(4)]
    rs = await asyncio.gather(*(client.post("/api/v1/admin/learning/teach",
                                            json={"intent": "tasa_itv", "phrase": p, "confirm_worse": True})
                                for p in phrases))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    now = await client.get("/api/v1/editor/routing")
    assert set(phrases) <= set(_intent(now.json()["document"], "tasa_itv")["phrases"])
    assert now.json()["version"] == 4
    assert sorted(r.json()["version"] for r in rs) == [1, 2, 3, 4]
    assert sorted(r.json()["previous"] for r in rs) == [0, 1, 2, 3]  # each made over the one before it


async def test_concurrent_intent_edits_keep_each_other(client: httpx.AsyncClient) -> None:
    doc = await _routing(client)
    edits = {}
    for intent_id in ("tasa_itv", "cita_previa", "horario"):
        one = {k: v for k, v in _intent(doc, intent_id).items() if k != "id"}
        one["description"] = f"editada {intent_id}"
        edits[intent_id] = one
    rs = await asyncio.gather(*(client.put(f"/api/v1/admin/routing/intents/{i}", json=b) for i, b in edits.items()))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
    now = await _routing(client)
    assert all(_intent(now, i)["description"] == f"editada {i}" for i in edits)


async def test_a_write_made_over_a_stale_version_is_refused(client: httpx.AsyncClient, runtime: Runtime) -> None:
    routing, flows = await _routing(client), await _flows(client)
    assert (await client.put("/api/v1/admin/routing", json=routing, params={"base": 0})).json()["version"] == 1
    r = await client.put("/api/v1/admin/routing", json=routing, params={"base": 0})
    assert r.status_code == 409 and r.json()["error_id"] == "stale-version", r.text
    assert r.json()["details"] == {"section": "routing", "base": 0, "current": 1} and "versión 1" in r.json()["message"]
    assert (await client.put("/api/v1/admin/ivr/flows", json=flows, params={"base": 0})).status_code == 200
    r = await client.put("/api/v1/admin/ivr/flows", json=flows, params={"base": 0})
    assert r.status_code == 409 and r.json()["error_id"] == "stale-version", r.text

    # At the store: of two writes made over the same version one wins, and `current` is the newest version.
    section = runtime.flows
    value = section.validate(flows)
    results = await asyncio.gather(section.put(value, "a", base=1), section.put(value, "b", base=1),
                                   return_exceptions=True)
    assert sorted(type(x).__name__ for x in results) == ["StaleVersion", "int"]
    from core.versioned import StaleVersion

    assert next(x for x in results if isinstance(x, StaleVersion)).current == 2
    assert (await section.fresh())[0] == 2
    assert (await section.info(2)).base == 1


async def test_undo_undoes_only_its_own_change(client: httpx.AsyncClient) -> None:
    async def teach(phrase: str) -> int:
        r = await client.post("/api/v1/admin/learning/teach",
                              json={"intent": "tasa_itv", "phrase": phrase, "confirm_worse": True})
        assert r.status_code == 200, r.text
        version: int = r.json()["version"]
        return version

    first = await teach("primera frase enseñada")
    second = await teach("segunda frase enseñada")
    r = await client.post("/api/v1/admin/learning/undo", json={"version": first})
    assert r.status_code == 409 and r.json()["error_id"] == "stale-version", r.text
    assert f"versión {second}" in r.json()["message"]
    phrases = _intent(await _routing(client), "tasa_itv")["phrases"]
    assert "primera frase enseñada" in phrases and "segunda frase enseñada" in phrases

    r = await client.post("/api/v1/admin/learning/undo", json={"version": second})
    assert r.status_code == 200 and r.json()["rolled_back_to"] == first, r.text
    phrases = _intent(await _routing(client), "tasa_itv")["phrases"]
    assert "primera frase enseñada" in phrases and "segunda frase enseñada" not in phrases
    # A version not made by «Añadir» (the undo's own rollback) is not undone from here.
    r = await client.post("/api/v1/admin/learning/undo", json={"version": r.json()["version"]})
    assert r.status_code == 422, r.text


async def test_the_intents_editor_has_size_limits(client: httpx.AsyncClient) -> None:
    doc = await _routing(client)
    huge = copy.deepcopy(doc)
    huge["synonyms"] = {f"palabra{n}": "x" * 1000 for n in range(2000)}  # about 2 MB
    for method, path, body in (("POST", "/api/v1/editor/routing/try", {"text": "hola", "config": huge}),
                               ("POST", "/api/v1/editor/routing/check", {"config": huge}),
                               ("PUT", "/api/v1/admin/routing", huge)):
        r = await client.request(method, path, json=body)
        assert r.status_code == 422 and r.json()["error_id"] == "document-too-large", (path, r.text[:300])

    from config.routing import MAX_PHRASES

    many = copy.deepcopy(doc)
    _intent(many, "tasa_itv")["phrases"] = [f"frase de ejemplo {n}" for n in range(MAX_PHRASES + 1)]
    r = await client.post("/api/v1/editor/routing/check", json={"config": many})
    assert r.status_code == 422 and f"como mucho {MAX_PHRASES} frases" in r.text, r.text[:300]
    long = copy.deepcopy(doc)
    _intent(long, "tasa_itv")["keywords"]["palabra " * 20] = 0.5
    r = await client.put("/api/v1/admin/routing", json=long)
    assert r.status_code == 422 and "no puede pasar de" in r.text, r.text[:300]
    assert [v["version"] for v in (await client.get("/api/v1/admin/routing/versions")).json()] == [0]


async def test_simulating_the_flows_in_force_refuses_a_queue_the_desk_no_longer_has(runtime: Runtime) -> None:
    """The dry run of the flows in force (not only of drafts) names what a live call would fail on."""
    runtime.settings.desk.queues = [q for q in runtime.settings.desk.queues if q.id != "N1"]
    with pytest.raises(InvalidInput, match="N1"):
        await runtime.ivr.simulate([("say", "quiero hablar con una persona")], dry_run=True)
