"""The desk's REST API over ASGI with a real Redis: login, roles, the ticket lifecycle, status lookup, limits."""

from __future__ import annotations

import httpx
import pytest

from atiende.runtime import Runtime
from tests.conftest import IVR_KEY as _IVR_KEY
from tests.conftest import STAFF_PASSWORD

# Every test here uses the `staff` fixture's people (conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("staff")]

ADMIN = ("admin", STAFF_PASSWORD)
ANA = ("ana", STAFF_PASSWORD)  # agent N1
LUIS = ("luis", STAFF_PASSWORD)  # agent N2
SUPER = ("supervisora", STAFF_PASSWORD)
IVR_KEY = {"X-API-Key": _IVR_KEY}


async def login(client: httpx.AsyncClient, who: tuple[str, str]) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"username": who[0], "password": who[1]})
    assert r.status_code == 200, r.text
    client.cookies.clear()  # tests authenticate by header only
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_login_me_logout_and_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/login", json={"username": "ana", "password": "wrong-pass"})
    assert r.status_code == 401 and r.json()["error_id"] == "unauthorized"
    assert set(r.json()) == {"error_id", "message", "details"}
    h = await login(client, ANA)
    me = (await client.get("/api/v1/auth/me", headers=h)).json()
    assert me["agent_id"] == "ana" and me["roles"] == ["agent_n1"] and me["level"] == 1
    assert (await client.get("/api/v1/auth/me")).status_code == 401
    await client.post("/api/v1/auth/login", json={"username": "ana", "password": ANA[1]})
    assert (await client.get("/api/v1/auth/me")).status_code == 200  # the session cookie of the web pages works too
    client.cookies.clear()
    assert (await client.get("/api/v1/auth/me", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await client.post("/api/v1/auth/logout", headers=h)).status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=h)).status_code == 401


async def test_roles_are_checked(client: httpx.AsyncClient) -> None:
    ana = await login(client, ANA)
    r = await client.get("/api/v1/audit", headers=ana)
    assert r.status_code == 403 and r.json()["error_id"] == "forbidden"
    assert (await client.post("/api/v1/users", headers=ana, json={"username": "x1", "name": "X", "roles": ["admin"],
                                                                 "password": "123456789012"})).status_code == 403
    admin = await login(client, ADMIN)
    r = await client.post("/api/v1/users", headers=admin, json={"username": "nora", "name": "Nora", "roles": ["agent_n1"],
                                                               "password": "nora-pass-2026"})
    assert r.status_code == 201 and r.json()["agent_id"] == "nora"
    assert (await client.post("/api/v1/users", headers=admin, json={"username": "nora", "name": "Nora", "roles": ["agent_n1"],
                                                                   "password": "nora-pass-2026"})).status_code == 409
    r = await client.post("/api/v1/api-keys", headers=admin, json={"name": "gw", "roles": ["supervisor"]})
    key = r.json()["key"]
    assert (await client.get("/api/v1/reports/summary", headers={"X-API-Key": key})).status_code == 200
    audit = (await client.get("/api/v1/audit", headers=admin, params={"actor": "user:admin"})).json()["entries"]
    assert {"user.create", "apikey.create"} <= {e["action"] for e in audit}


async def test_ticket_lifecycle_over_http(client: httpx.AsyncClient, runtime: Runtime) -> None:
    ivr = IVR_KEY
    r = await client.post("/api/v1/tickets", headers=ivr, json={
        "channel": "phone", "queue": "N1", "subject": "Ayudas alquiler", "body": "quiero información",
        "citizen": {"kind": "phone", "value": "600111222", "name": "Pepa"}, "intent": "info_tramite", "trace_id": "tr-9"})
    assert r.status_code == 201, r.text
    t = r.json()
    ref = t["ref"]
    ana, luis = await login(client, ANA), await login(client, LUIS)
    listed = (await client.get("/api/v1/tickets", headers=ana, params={"queue": "N1", "waiting": True})).json()
    assert ref in [x["ref"] for x in listed["tickets"]]
    # not assigned yet: no reply
    assert (await client.post(f"/api/v1/tickets/{ref}/reply", headers=ana, json={"text": "hola"})).json()["error_id"] == \
        "not-assignee"
    assert (await client.post(f"/api/v1/tickets/{ref}/claim", headers=ana)).status_code == 200
    r = await client.post(f"/api/v1/tickets/{ref}/claim", headers=luis)
    assert r.status_code == 409 and r.json()["error_id"] == "already-claimed"
    r = await client.post(f"/api/v1/tickets/{ref}/reply", headers=ana, json={"text": "Le llamo mañana"})
    assert r.status_code == 200 and r.json()["delivery"]["channel"] == "phone"
    assert (await client.post(f"/api/v1/tickets/{ref}/escalate", headers=luis, json={"note": "x"})).status_code == 403
    r = await client.post(f"/api/v1/tickets/{ref}/escalate", headers=ana, json={"note": "Necesita un especialista"})
    assert r.json()["status"] == "escalated" and r.json()["queue"] == "N2"
    assert (await client.post(f"/api/v1/tickets/{ref}/claim", headers=ana)).json()["error_id"] == "wrong-level"
    assert (await client.post(f"/api/v1/tickets/{ref}/claim", headers=luis)).status_code == 200
    r = await client.post(f"/api/v1/tickets/{ref}/close", headers=luis, json={"note": "resuelto"})
    assert r.json()["status"] == "closed"
    # the ticket is N2's now: an N1 agent does not see it; ana, who escalated it, still follows it
    other_n1 = {"X-API-Key": await runtime.desk.auth.create_api_key("n1", ["agent_n1"])}
    assert (await client.get(f"/api/v1/tickets/{ref}", headers=other_n1)).json()["error_id"] == "not-your-queue"
    assert (await client.get(f"/api/v1/tickets/{ref}", headers=ana)).status_code == 200
    detail = (await client.get(f"/api/v1/tickets/{ref.lower()}", headers=luis)).json()
    assert detail["citizen"]["name"] == "Pepa"
    assert [i["kind"] for i in detail["interactions"]][:2] == ["call", "status_change"]
    s = (await client.get(f"/api/v1/status/{ref[:3]}-{ref[3:]}")).json()
    assert s["status"] == "closed" and "cerrada" in s["text"] and "Pepa" not in s["text"]
    trace = (await client.get("/api/v1/traces/tr-9", headers=luis)).json()
    assert [t["ref"] for t in trace["tickets"]] == [ref] and trace["entries"][0]["kind"] == "ticket"
    r = await client.get("/api/v1/status/ZZZZZZ")
    assert r.status_code == 404 and "No encontramos" in r.json()["message"]


async def test_presence_queues_and_reserve(client: httpx.AsyncClient) -> None:
    ana = await login(client, ANA)
    assert (await client.put("/api/v1/agents/me/presence", headers=ana, json={"presence": "available"})).json()["presence"] \
        == "available"
    assert (await client.put("/api/v1/agents/luis/presence", headers=ana, json={"presence": "away"})).status_code == 403
    q = {x["id"]: x for x in (await client.get("/api/v1/queues", headers=ana)).json()["queues"]}
    assert q["N1"]["agents_available"] == 1
    r = await client.post("/api/v1/queues/N1/reserve", headers=IVR_KEY, json={"item": "call-1"})
    assert r.json()["agent"]["id"] == "ana" and r.json()["agent"]["sip_uri"].startswith("sip:ana@")
    assert (await client.post("/api/v1/queues/N1/reserve", headers=IVR_KEY, json={})).json() == {"agent": None}


async def test_status_lookup_is_rate_limited(client: httpx.AsyncClient, runtime: Runtime) -> None:
    limit = runtime.settings.desk.rate_limits["status"].requests
    codes = [(await client.get("/api/v1/status/ABCDEF")).status_code for _ in range(limit + 2)]
    assert codes[:limit] == [404] * limit and codes[-1] == 429


async def test_bad_input_is_422_with_details(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tickets", headers=IVR_KEY, json={"subject": "", "channel": "fax"})
    assert r.status_code == 422 and r.json()["error_id"] == "invalid-input" and r.json()["details"]
    r = await client.post("/api/v1/tickets", headers=IVR_KEY, json={"subject": "x", "queue": "N7"})
    assert r.status_code == 422 and "N7" in r.json()["message"]
    r = await client.post("/api/v1/tickets", headers=IVR_KEY, json={"subject": "x", "citizen_id": "C000"})
    assert r.status_code == 422
    r = await client.post("/api/v1/tickets", headers=IVR_KEY, json={"subject": "x", "meta": {"k": "v" * 20000}})
    assert r.status_code == 422 and "16384" in str(r.json()["details"])
