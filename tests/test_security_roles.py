"""Issue 16, finding 5: every action checks the principal's rights on the server.

`test_role_route_matrix` walks every route of the application (generated from `app.routes`, so a new route is
covered the day it is added) for anonymous, agent_n1, agent_n2, supervisor, admin and a machine's API key, and
compares the status class with the decision in `DECISIONS`. A route without a decision fails the suite: whoever
adds one must say who may call it. The other tests replay the attacks of the review of 2026-12-03."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from tests.conftest import STAFF_PASSWORD

pytestmark = pytest.mark.anyio

N1, N2, SUP, ADM, KEY = "agent_n1", "agent_n2", "supervisor", "admin", "key"
PRINCIPALS = ("anonymous", N1, N2, SUP, ADM, KEY)  # KEY: a machine (the IVR) with the supervisor role
STAFF = frozenset({N1, N2, SUP, ADM, KEY})
SUPERVISORS = frozenset({SUP, ADM, KEY})
ADMINS = frozenset({ADM})
AGENTS_ONLY = frozenset({N1, N2, ADM})  # claiming needs an agent (admin passes every role check)
ESCALATORS = frozenset({N1, SUP, ADM, KEY})
PUBLIC = "public"  # anyone, citizens included (rate-limited where it costs)
SIGNED = "signed"  # channel webhooks: authenticated by the provider's signature or secret (tests/test_channels*.py)
STREAM = "stream"  # long-lived (SSE, WebSocket): only refusals are checked here

Decision = frozenset[str] | str

# Who may call what. The role check is what this table pins; finer rights (own tickets, queues) have their own tests.
DECISIONS: dict[tuple[str, str], Decision] = {
    # framework and health
    ("GET", "/openapi.json"): PUBLIC, ("GET", "/docs"): PUBLIC, ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC, ("GET", "/metrics"): PUBLIC, ("GET", "/healthz"): PUBLIC, ("GET", "/livez"): PUBLIC,
    # pages (the data behind them is guarded) and static files
    ("GET", "/login"): PUBLIC, ("GET", "/desk"): PUBLIC, ("GET", "/admin"): PUBLIC, ("GET", "/reports"): PUBLIC,
    ("GET", "/"): PUBLIC, ("GET", "/static/{name}"): PUBLIC, ("GET", "/chat"): PUBLIC,
    ("POST", "/desk/api/yaml/parse"): SUPERVISORS, ("POST", "/desk/api/yaml/dump"): SUPERVISORS,  # editors' helpers
    ("GET", "/desk/api/events"): STREAM,
    # citizens' side
    ("GET", "/api/v1/status/{ref}"): PUBLIC, ("GET", "/api/v1/hours"): PUBLIC, ("GET", "/api/v1/hours/{day}"): PUBLIC,
    ("POST", "/api/v1/route"): PUBLIC, ("GET", "/api/v1/route/dtmf/{menu}/{key}"): PUBLIC,
    ("WS", "/api/v1/channels/webchat/ws"): STREAM,
    ("POST", "/api/v1/channels/telegram/webhook"): SIGNED, ("GET", "/api/v1/channels/whatsapp/webhook"): SIGNED,
    ("POST", "/api/v1/channels/whatsapp/webhook"): SIGNED, ("POST", "/api/v1/channels/email/inbound"): SIGNED,
    # auth and accounts
    ("POST", "/api/v1/auth/login"): PUBLIC, ("POST", "/api/v1/auth/logout"): STAFF, ("GET", "/api/v1/auth/me"): STAFF,
    ("POST", "/api/v1/auth/password"): STAFF,
    # single sign-on (OpenID Connect): the start and the provider's redirect back are for anyone (404 while off)
    ("GET", "/api/v1/auth/oidc/config"): PUBLIC, ("GET", "/api/v1/auth/oidc/login"): PUBLIC,
    ("GET", "/api/v1/auth/oidc/callback"): PUBLIC,
    ("PUT", "/api/v1/auth/oidc/links"): ADMINS, ("DELETE", "/api/v1/auth/oidc/links"): ADMINS,  # explicit links
    ("GET", "/api/v1/users"): ADMINS, ("POST", "/api/v1/users"): ADMINS,
    ("PUT", "/api/v1/users/{username}/password"): ADMINS, ("POST", "/api/v1/users/{username}/disable"): ADMINS,
    ("POST", "/api/v1/users/{username}/enable"): ADMINS,
    ("GET", "/api/v1/api-keys"): ADMINS, ("POST", "/api/v1/api-keys"): ADMINS, ("DELETE", "/api/v1/api-keys/{name}"): ADMINS,
    # tickets
    ("POST", "/api/v1/tickets"): STAFF, ("GET", "/api/v1/tickets"): STAFF,
    ("POST", "/api/v1/tickets/claim-next"): frozenset({N1, N2}),  # an admin without an agent record: "not-an-agent"
    ("GET", "/api/v1/tickets/{ref}"): STAFF,
    ("GET", "/api/v1/traces/{trace_id}"): STAFF, ("GET", "/api/v1/tickets/{ref}/interactions"): STAFF,
    ("POST", "/api/v1/tickets/{ref}/interactions"): STAFF, ("POST", "/api/v1/tickets/{ref}/notes"): STAFF,
    ("POST", "/api/v1/tickets/{ref}/reply"): STAFF, ("POST", "/api/v1/tickets/{ref}/claim"): AGENTS_ONLY,
    ("POST", "/api/v1/tickets/{ref}/assign"): SUPERVISORS, ("POST", "/api/v1/tickets/{ref}/escalate"): ESCALATORS,
    ("POST", "/api/v1/tickets/{ref}/status"): STAFF, ("POST", "/api/v1/tickets/{ref}/close"): STAFF,
    ("GET", "/api/v1/tickets/{ref}/attachments/{sha256}"): STAFF,
    # citizens
    ("GET", "/api/v1/citizens"): STAFF, ("POST", "/api/v1/citizens"): STAFF, ("GET", "/api/v1/citizens/{citizen_id}"): STAFF,
    ("POST", "/api/v1/citizens/{citizen_id}/identities"): STAFF,
    ("GET", "/api/v1/citizens/{citizen_id}/export"): ADMINS, ("POST", "/api/v1/citizens/{citizen_id}/erase"): ADMINS,
    ("POST", "/api/v1/citizens/{citizen_id}/merge"): SUPERVISORS,
    # agents and queues
    ("GET", "/api/v1/agents"): STAFF, ("GET", "/api/v1/agents/me"): STAFF, ("PUT", "/api/v1/agents/me/presence"): STAFF,
    ("PUT", "/api/v1/agents/{agent_id}/presence"): STAFF, ("GET", "/api/v1/agents/{agent_id}"): STAFF,
    ("PUT", "/api/v1/agents/{agent_id}"): ADMINS, ("DELETE", "/api/v1/agents/{agent_id}"): ADMINS,
    ("POST", "/api/v1/agents/{agent_id}/release"): SUPERVISORS, ("GET", "/api/v1/queues"): STAFF,
    ("POST", "/api/v1/queues/{queue}/reserve"): SUPERVISORS,
    # reports and audit
    ("GET", "/api/v1/wallboard"): SUPERVISORS, ("GET", "/wallboard"): PUBLIC,
    ("GET", "/api/v1/reports/summary"): SUPERVISORS, ("GET", "/api/v1/reports/overdue"): SUPERVISORS,
    ("GET", "/api/v1/audit"): SUPERVISORS,
    # calls, callbacks, voicemail, softphone
    ("GET", "/api/v1/calls"): SUPERVISORS, ("GET", "/api/v1/calls/containment"): SUPERVISORS,
    ("GET", "/api/v1/calls/surveys"): SUPERVISORS, ("GET", "/api/v1/calls/{call_id}"): SUPERVISORS,
    ("POST", "/api/v1/calls/{call_id}/transfer"): STAFF,
    ("GET", "/api/v1/callbacks"): STAFF, ("POST", "/api/v1/callbacks"): STAFF,
    ("GET", "/api/v1/callbacks/{callback_id}"): STAFF, ("POST", "/api/v1/callbacks/next"): STAFF,
    ("POST", "/api/v1/callbacks/{callback_id}/claim"): STAFF, ("POST", "/api/v1/callbacks/{callback_id}/attempts"): STAFF,
    # the holder of the claim (or a supervisor), on their own phone: checked in the route (tests/test_callback_call_e2e.py)
    ("POST", "/api/v1/callbacks/{callback_id}/call"): STAFF, ("GET", "/api/v1/callbacks/{callback_id}/call"): STAFF,
    ("GET", "/api/v1/voicemails/{call_id}/audio"): STAFF,
    ("GET", "/api/v1/softphone/credentials"): STAFF, ("POST", "/api/v1/softphone/offline"): STAFF,
    # supervision and recording of agent calls (issue 18.2, 18.6)
    ("GET", "/api/v1/calls/live"): SUPERVISORS, ("POST", "/api/v1/calls/{call_id}/supervise"): SUPERVISORS,
    ("POST", "/api/v1/calls/{call_id}/recording"): STAFF, ("GET", "/api/v1/calls/{call_id}/recordings"): SUPERVISORS,
    ("GET", "/api/v1/recordings/{recording_id}"): SUPERVISORS,
    ("GET", "/api/v1/recordings/{recording_id}/audio"): SUPERVISORS,
    # operations (issue 18: dispositions, canned replies, SLA, CDRs; their admin lists are under /api/v1/admin/)
    ("GET", "/api/v1/dispositions"): STAFF, ("POST", "/api/v1/tickets/{ref}/disposition"): STAFF,
    ("POST", "/api/v1/calls/{call_id}/disposition"): STAFF, ("GET", "/api/v1/reports/dispositions"): SUPERVISORS,
    ("GET", "/api/v1/canned"): STAFF, ("POST", "/api/v1/tickets/{ref}/canned/{reply_id}/render"): STAFF,
    ("GET", "/api/v1/sla/at-risk"): SUPERVISORS, ("GET", "/api/v1/cdr.csv"): SUPERVISORS,
    ("GET", "/api/v1/calls/{call_id}/cdr"): SUPERVISORS, ("GET", "/admin/operaciones"): PUBLIC,
    # IVR simulation and the admin editors
    ("POST", "/api/v1/simulate"): SUPERVISORS,
}
_ADMIN_PREFIXES = ("/api/v1/admin/",)  # every admin resource: admins only (desk_api.app.GUARDED)
_EDITOR_PREFIXES = ("/api/v1/editor/",)


def decision_for(method: str, path: str) -> Decision | None:
    if (method, path) in DECISIONS:
        return DECISIONS[(method, path)]
    if path.startswith(_ADMIN_PREFIXES):
        return ADMINS
    if path.startswith(_EDITOR_PREFIXES):
        return EDITOR_DECISION
    return None


# The flow and routing editors' drafts and previews (issue of the admin editors): supervisors draft, admins publish.
EDITOR_DECISION: Decision = SUPERVISORS


def app_routes(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the application serves, routers included (WebSockets as "WS")."""

    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, str]]:
        for r in routes:
            if hasattr(r, "original_router"):  # FastAPI's included router: its routes under its prefix
                yield from walk(r.original_router.routes, prefix + (r.include_context.prefix or ""))
            elif hasattr(r, "path"):
                for m in sorted(getattr(r, "methods", None) or {"WS"}):
                    if m != "HEAD":
                        yield m, prefix + r.path

    yield from walk(app.routes, "")


SAMPLE = {"ref": "ZZZZZZ", "name": "common.js", "day": "2026-12-08", "menu": "main", "key": "1", "section": "calendar"}


def concrete(path: str) -> str:
    out = path
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        out = out[:start] + SAMPLE.get(out[start + 1:end], "nadie-x") + out[end + 1:]
    return out


async def test_every_route_has_a_decision(client: httpx.AsyncClient) -> None:
    from desk_api.app import create_app

    app = create_app(client._transport.app.state.services)  # type: ignore[attr-defined]
    missing = sorted({f"{m} {p}" for m, p in app_routes(app) if decision_for(m, p) is None})
    assert missing == [], "routes without a decision in DECISIONS (say who may call them):\n" + "\n".join(missing)


async def test_role_route_matrix(client: httpx.AsyncClient, runtime: Runtime, staff: dict[str, str]) -> None:
    auth = runtime.desk.auth
    headers: dict[str, dict[str, str]] = {"anonymous": {"Authorization": "Bearer nobody"}, KEY: {"X-API-Key": staff["ivr_key"]}}
    for role, user in ((N1, "ana"), (N2, "luis"), (SUP, "supervisora"), (ADM, "admin")):
        headers[role] = {"Authorization": f"Bearer {(await auth.login(user, STAFF_PASSWORD)).token}"}
    app = client._transport.app  # type: ignore[attr-defined]
    routes = sorted(set(app_routes(app)), key=lambda r: r[1] == "/api/v1/auth/logout")  # logout last: it ends sessions
    wrong: list[str] = []
    for method, path in routes:
        decision = decision_for(method, path)
        if decision is None or decision == SIGNED or method == "WS":
            continue  # undecided routes fail test_every_route_has_a_decision
        for who in PRINCIPALS:
            if decision == STREAM and who != "anonymous":
                continue
            if decision == STREAM:
                expected = "401"
            elif decision == PUBLIC:
                expected = "allowed"
            elif who == "anonymous":
                expected = "401"
            else:
                assert isinstance(decision, frozenset)
                expected = "allowed" if who in decision else "403"
            body: dict[str, str] | None = {} if method in ("POST", "PUT", "PATCH") else None
            r = await client.request(method, concrete(path), headers=headers[who], json=body)
            got = "401" if r.status_code == 401 else "403" if r.status_code == 403 else "allowed"
            if r.status_code >= 500 and r.status_code != 503:  # 503: a feature switched off, not a right
                got = f"{r.status_code}"
            if got != expected:
                wrong.append(f"{method} {path} as {who}: {r.status_code} (expected {expected}) {r.text[:120]}")
    assert wrong == [], "\n".join(wrong)


# ---- the attacks of finding 5 ----------------------------------------------------------------------------------


async def _login(runtime: Runtime, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {(await runtime.desk.auth.login(user, STAFF_PASSWORD)).token}"}


async def test_n1_cannot_reopen_unassign_close_or_fake_on_an_n2_complaint(client: httpx.AsyncClient, runtime: Runtime,
                                                                          staff: dict[str, str]) -> None:
    ivr = {"X-API-Key": staff["ivr_key"]}
    ana, luis = await _login(runtime, "ana"), await _login(runtime, "luis")
    r = await client.post("/api/v1/tickets", headers=ivr, json={"channel": "phone", "subject": "Queja", "kind": "complaint",
                                                               "body": "me atendieron mal"})
    ref = r.json()["ref"]
    assert r.json()["queue"] == "N2"
    assert (await client.post(f"/api/v1/tickets/{ref}/claim", headers=luis)).status_code == 200
    assert (await client.post(f"/api/v1/tickets/{ref}/close", headers=luis, json={"note": "ok"})).json()["status"] == "closed"
    # the review's attack: a note of direction "in" reopened (and unassigned) the closed complaint
    for body in ({"kind": "note", "direction": "in", "text": "x"}, {"kind": "message", "direction": "in", "text": "x"},
                 {"kind": "message", "direction": "out", "text": "respuesta falsa"}):
        r = await client.post(f"/api/v1/tickets/{ref}/interactions", headers=ana, json=body)
        assert r.status_code == 403, (body, r.text)
    attempts: list[tuple[str, dict[str, str | None]]] = [("status", {"status": "open"}), ("close", {}),
                                                        ("assign", {"agent_id": None}), ("notes", {"text": "hola"}),
                                                        ("reply", {"text": "hola"})]
    for path, payload in attempts:
        assert (await client.post(f"/api/v1/tickets/{ref}/{path}", headers=ana, json=payload)).status_code == 403, path
    t = (await client.get(f"/api/v1/tickets/{ref}", headers=luis)).json()
    assert t["ticket"]["status"] == "closed" and t["ticket"]["assignee"] == "luis"
    assert t["ticket"]["first_response_at"] is None
    # N2's own agent may not fake a citizen's message or a first response either: a person's entry is a note
    r = await client.post(f"/api/v1/tickets/{ref}/interactions", headers=luis,
                          json={"kind": "message", "direction": "out", "text": "x"})
    assert r.status_code == 403 and r.json()["error_id"] == "notes-only"
    r = await client.post(f"/api/v1/tickets/{ref}/interactions", headers=luis, json={"kind": "note", "text": "revisado"})
    assert r.status_code == 201
    # a machine (the IVR) records what happened on the line
    r = await client.post(f"/api/v1/tickets/{ref}/interactions", headers=ivr,
                          json={"kind": "call", "channel": "phone", "direction": "in", "text": "vuelve a llamar"})
    assert r.status_code == 201


async def test_linking_someone_elses_identity_is_a_merge_for_supervisors(client: httpx.AsyncClient, runtime: Runtime,
                                                                         staff: dict[str, str]) -> None:
    ivr = {"X-API-Key": staff["ivr_key"]}
    ana, sup = await _login(runtime, "ana"), await _login(runtime, "supervisora")
    a = (await client.post("/api/v1/tickets", headers=ivr, json={
        "subject": "A", "citizen": {"kind": "phone", "value": "600111111", "name": "Ana Pérez"}})).json()["citizen_id"]
    b = (await client.post("/api/v1/tickets", headers=ivr, json={
        "subject": "B", "citizen": {"kind": "email", "value": "otro@example.org", "name": "Otro"}})).json()["citizen_id"]
    r = await client.post(f"/api/v1/citizens/{a}/identities", headers=ana, json={"kind": "email", "value": "otro@example.org"})
    assert r.status_code == 403 and r.json()["error_id"] == "merge-needs-supervisor"
    assert (await runtime.desk.citizens.get(b)).merged_into is None
    assert (await client.post(f"/api/v1/citizens/{a}/merge", headers=ana, json={"other_id": b})).status_code == 403
    # a new identity of her own is fine for the agent
    r = await client.post(f"/api/v1/citizens/{a}/identities", headers=ana, json={"kind": "email", "value": "ana@example.org"})
    assert r.status_code == 200
    r = await client.post(f"/api/v1/citizens/{a}/identities", headers=sup, json={"kind": "email", "value": "otro@example.org"})
    assert r.status_code == 200 and {i["value"] for i in r.json()["identities"]} >= {"otro@example.org", "+34600111111"}


async def test_agents_see_only_their_queues(client: httpx.AsyncClient, runtime: Runtime, staff: dict[str, str]) -> None:
    ivr = {"X-API-Key": staff["ivr_key"]}
    ana, luis = await _login(runtime, "ana"), await _login(runtime, "luis")
    n1 = (await client.post("/api/v1/tickets", headers=ivr, json={
        "subject": "Consulta", "citizen": {"kind": "phone", "value": "600222222", "name": "Uno"}})).json()
    n2 = (await client.post("/api/v1/tickets", headers=ivr, json={
        "subject": "Queja", "kind": "complaint", "trace_id": "tr-n2",
        "citizen": {"kind": "phone", "value": "600333333", "name": "Dos"}})).json()
    listed = [t["ref"] for t in (await client.get("/api/v1/tickets", headers=ana)).json()["tickets"]]
    assert n1["ref"] in listed and n2["ref"] not in listed
    assert (await client.get("/api/v1/tickets", headers=ana, params={"queue": "N2"})).status_code == 403
    assert (await client.get("/api/v1/tickets", headers=ana, params={"citizen_id": n2["citizen_id"]})).json()["count"] == 0
    for path in (f"/api/v1/tickets/{n2['ref']}", f"/api/v1/tickets/{n2['ref']}/interactions", "/api/v1/traces/tr-n2",
                 f"/api/v1/citizens/{n2['citizen_id']}", f"/api/v1/tickets/{n2['ref']}/attachments/{'0' * 64}"):
        r = await client.get(path, headers=ana)
        assert r.status_code == 403 and r.json()["error_id"] == "not-your-queue", path
    citizens = {c["id"] for c in (await client.get("/api/v1/citizens", headers=ana)).json()}
    assert n1["citizen_id"] in citizens and n2["citizen_id"] not in citizens
    assert (await client.post(f"/api/v1/tickets/{n2['ref']}/claim", headers=ana)).status_code == 403
    # N2 works both queues (level 2, skills quejas and general); supervisors see everything
    both = {t["ref"] for t in (await client.get("/api/v1/tickets", headers=luis)).json()["tickets"]}
    assert {n1["ref"], n2["ref"]} <= both
    sup = await _login(runtime, "supervisora")
    assert len((await client.get("/api/v1/citizens", headers=sup)).json()) >= 2
