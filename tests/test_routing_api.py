"""Routing over HTTP (route, admin edits with versions and rollback) and the `atiende route` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from atiende.cli import main
from atiende.runtime import Runtime

pytestmark = pytest.mark.anyio


async def test_route_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/route", json={"text": "quiero pagar la tasa de la itv", "channel": "chat"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["intent"] == "tasa_itv" and body["queue"] == "N1" and 0.5 <= body["confidence"] <= 1
    assert set(body) >= {"text", "intent", "confidence", "queue", "entities", "alternatives", "needs_confirmation"}
    r = await client.post("/api/v1/route", json={"text": "hola buenos días"})
    assert r.status_code == 200 and r.json()["intent"] is None and r.json()["queue"] is None
    r = await client.post("/api/v1/route", json={"text": "quiero poner una queja"})
    assert r.json()["queue"] == "N2"


async def test_route_endpoint_rejects_bad_input(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/route", json={"channel": "voice"})
    assert r.status_code == 422 and r.json()["error_id"] == "invalid-input"
    r = await client.post("/api/v1/route", json={"text": "x" * 10_001})
    assert r.status_code == 422
    r = await client.post("/api/v1/route", json={"text": "🙂" * 10_000})
    assert r.status_code == 200 and r.json()["intent"] is None
    r = await client.get("/api/v1/route/dtmf/main/0")
    assert r.json()["intent"] == "hablar_agente"
    assert (await client.get("/api/v1/route/dtmf/main/x")).status_code == 404


async def test_admin_edit_versions_rollback(client: httpx.AsyncClient, runtime: Runtime) -> None:
    r = await client.get("/api/v1/admin/routing")
    assert r.status_code == 200
    doc = r.json()
    assert doc["version"] == 0 and len(doc["config"]["intents"]) == 12
    pizza = {"text": "quiero pedir un bocadillo"}
    assert (await client.post("/api/v1/route", json=pizza)).json()["intent"] is None

    # Invalid changes: 422 with reasons, nothing stored.
    bad = json.loads(json.dumps(doc["config"]))
    bad["intents"][0]["keywords"]["itv"] = 3
    bad["dtmf_menus"]["main"]["5"] = "no_such_intent"
    r = await client.put("/api/v1/admin/routing", json=bad)
    assert r.status_code == 422
    assert r.json()["details"] and all("reason" in d for d in r.json()["details"])
    r = await client.put("/api/v1/admin/routing/intents/hablar_agente", json={"keywords": {"hola": 0.9}})
    assert r.status_code == 422 and "filler" in r.json()["message"]
    assert (await client.get("/api/v1/admin/routing")).json()["version"] == 0

    # A new intent goes live at once.
    r = await client.put("/api/v1/admin/routing/intents/comida", headers={"X-Actor": "ana"},
                         json={"description": "comida", "keywords": {"bocadillo": 0.9}, "queue": "N1"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert (await client.post("/api/v1/route", json=pizza)).json()["intent"] == "comida"
    assert (await client.get("/api/v1/admin/routing/intents/comida")).json()["keywords"] == {"bocadillo": 0.9}

    versions = (await client.get("/api/v1/admin/routing/versions")).json()
    assert [v["version"] for v in versions] == [0, 1]
    # the actor is the authenticated principal (the test client's admin key); an X-Actor header is ignored
    assert versions[1]["actor"] == "key:test-admin" and versions[1]["active"]

    r = await client.post("/api/v1/admin/routing/rollback", json={"version": 0}, headers={"X-Actor": "sara"})
    assert r.json()["version"] == 2
    assert (await client.post("/api/v1/route", json=pizza)).json()["intent"] is None
    assert (await client.get("/api/v1/admin/routing/versions/1")).status_code == 200
    assert (await client.get("/api/v1/admin/routing/versions/9")).status_code == 404
    # The service object sees the same version as the API.
    version, cfg = await runtime.router.config()
    assert version == 2 and len(cfg.intents) == 12


async def test_admin_explain(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/admin/routing/explain", json={"text": "Eh, kiero pagar la ITV"})
    body = r.json()
    assert body["intent"] == "tasa_itv" and body["explain"]["normalized"] == "quiero pagar la itv"
    assert any(k["weight"] > 0.9 for k in body["explain"]["intents"]["tasa_itv"]["keywords"])


async def test_admin_put_whole_config(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/api/v1/admin/routing")).json()["config"]
    doc["threshold"] = 1.0
    r = await client.put("/api/v1/admin/routing", json=doc)
    assert r.status_code == 200 and r.json()["version"] == 1
    # With an extreme threshold even a clear request is out of scope.
    assert (await client.post("/api/v1/route", json={"text": "cita previa"})).json()["intent"] is None
    r = await client.put("/api/v1/admin/routing", json={"threshold": "high"})
    assert r.status_code == 422


def test_cli_route_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--json", "quiero pagar la tasa de la itv"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert list(obj) == ["text", "intent", "confidence", "queue", "entities", "alternatives"]
    assert obj["intent"] == "tasa_itv"


def test_cli_route_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "u.txt"
    f.write_bytes(b"hola\n\n  \nqu\xc3\xa9 horario tiene la oficina de c\xc3\xa1ceres\n\xff\xfe junk \x00\ncero\n")
    assert main(["route", "--json", "--file", str(f)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["intent"] for x in lines] == [None, "oficinas", None, "hablar_agente"]
    assert lines[1]["entities"]["town"] == "Cáceres"
    assert main(["route", "--json", "--file", str(tmp_path / "missing.txt")]) == 2


def test_cli_eval(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import shared_file

    assert main(["route", "--eval", str(shared_file("eval/routing_dev.tsv")), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["in_scope_accuracy"] >= 0.97 and report["none_rejected"] == report["none"]


async def test_the_public_route_endpoint_is_throttled_per_address(runtime: Runtime, client: httpx.AsyncClient) -> None:
    # Each request costs milliseconds of CPU: without a limit, one address could keep a node's cores busy.
    runtime.settings.desk.rate_limits["route"] = runtime.settings.desk.rate_limits["route"].model_copy(
        update={"requests": 5})
    codes = [(await client.post("/api/v1/route", json={"text": "pagar la itv"})).status_code for _ in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
