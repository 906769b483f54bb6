"""Issue 18 (3, 7, 8, 11) over HTTP with real Redis: disposition codes (admin-edited, versioned, required to
close), canned replies filled on the server, SLA warnings and breaches in business time (desk events once, a
signed webhook to a real local HTTP server), the tickets at risk, and call detail records (masked caller, CSV
export that a spreadsheet cannot turn into formulas, a signed webhook per finished call)."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from core.clock import FixedClock
from desk.events import EventView, visible
from desk_api.routes.operations import Operations, build_operations
from ivr.cdr import SIGNATURE_HEADER, mask_caller, verify
from ivr.contact import PathEntry, Session
from tests.conftest import MADRID

pytestmark = pytest.mark.anyio
SECRET = "secreto-del-crm-0123456789"


# ---- a real webhook receiver --------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A local HTTP server that records each POST; the first `fail` requests get a 503 (to see the retries)."""

    fail: int = 0
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rec.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = 503 if len(rec.got) <= rec.fail else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(fail=1).start()
    yield rec
    rec.stop()


# ---- helpers ------------------------------------------------------------------------------------------------


async def _login(client: httpx.AsyncClient, user: str, password: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    client.cookies.clear()  # the bearer token speaks for the user; requests without it go as the admin
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _ops(runtime: Runtime) -> Operations:
    return build_operations(runtime.current_settings, runtime.store, runtime.clock, runtime.desk, runtime.calendars,
                            runtime.calls)


def _webhooks(runtime: Runtime, url: str) -> None:
    hook = {"url": url, "secret": SECRET, "attempts": 3, "backoff_s": 0.05, "timeout_s": 2}
    desk = runtime.settings.desk
    runtime.settings.desk.sla = desk.sla.model_validate({**desk.sla.model_dump(), "webhook": hook})
    runtime.settings.desk.cdr = desk.cdr.model_validate({**desk.cdr.model_dump(), "webhook": hook})


async def _call(runtime: Runtime, call_id: str, *, caller: str = "+34 600 123 123", agent: str | None = "ana",
                ended: bool = True, said: str = "hola") -> Session:
    start = runtime.clock.now() - timedelta(minutes=5)
    rec = Session(call_id=call_id, trace_id=f"tr-{call_id}", channel="voice", caller=caller, started_at=start,
                  ended_at=runtime.clock.now() if ended else None, intent="padron", queue="N1",
                  outcome="transferred" if agent else "self_service", survey=4, ended_by="caller",
                  vars={"agent": agent, "utterance": said, "waited_s": 42.04, "estimated_wait_s": 60,
                        "supervised_by": ["user:sara"], "recordings": ["rec-1", "rec-2"]}
                  if agent else {"utterance": said},
                  path=[PathEntry(flow="main", index=0, verb="say", id="saludo", at=start),
                        PathEntry(flow="main", index=1, verb="enqueue", at=start)])
    await runtime.calls.save(rec)
    return rec


# ---- 3. dispositions ----------------------------------------------------------------------------------------


async def test_dispositions_required_to_close_and_counted(client: httpx.AsyncClient, runtime: Runtime,
                                                          staff: dict[str, str]) -> None:
    ana = await _login(client, "ana", staff["password"])
    codes = (await client.get("/api/v1/dispositions?queue=N1", headers=ana)).json()
    assert codes["required"] is False
    assert "informado" in [c["code"] for c in codes["codes"]]
    assert "queja-registrada" not in [c["code"] for c in codes["codes"]]  # an N2 code

    # An admin makes them required: a new version, by the authenticated admin, audited.
    current = (await client.get("/api/v1/admin/dispositions")).json()
    assert current["version"] == 0
    doc = {**current["document"], "required": True}
    assert (await client.put("/api/v1/admin/dispositions", json=doc, headers=ana)).status_code == 403
    r = await client.put("/api/v1/admin/dispositions?note=obligatorias", json=doc)
    assert r.status_code == 200 and r.json()["version"] == 1
    versions = (await client.get("/api/v1/admin/dispositions/versions")).json()
    assert versions[-1]["actor"] == "key:test-admin" and versions[-1]["active"]
    audit = await runtime.desk.audit.entries(10, target="dispositions")
    assert audit[0]["action"] == "dispositions.update" and audit[0]["actor"] == "key:test-admin"

    t = await runtime.desk.tickets.create(channel="phone", queue="N1", subject="Padrón", body="quiero empadronarme")
    await client.post(f"/api/v1/tickets/{t.ref}/claim", headers=ana)
    r = await client.post(f"/api/v1/tickets/{t.ref}/close", json={"note": ""}, headers=ana)
    assert r.status_code == 422 and r.json()["error_id"] == "disposition-required"
    assert "Indique una tipificación antes de cerrar" in r.json()["message"]
    assert (await runtime.desk.tickets.get(t.ref)).status == "assigned"  # nothing changed
    r = await client.post(f"/api/v1/tickets/{t.ref}/status", json={"status": "resolved"}, headers=ana)
    assert r.status_code == 422 and "resolver" in r.json()["message"]

    # An unknown code, or one of another queue, is refused with the usable ones listed.
    r = await client.post(f"/api/v1/tickets/{t.ref}/close", json={"disposition": "queja-registrada"}, headers=ana)
    assert r.status_code == 422 and r.json()["error_id"] == "unknown-disposition"
    assert "informado" in r.json()["details"]["codes"]
    r = await client.post(f"/api/v1/tickets/{t.ref}/close", json={"disposition": "informado"}, headers=ana)
    assert r.status_code == 200, r.text
    closed = r.json()
    assert closed["status"] == "closed" and closed["meta"]["disposition"]["code"] == "informado"
    assert closed["meta"]["disposition"]["by"] == "user:ana"
    items = await runtime.desk.tickets.interactions(t.ref)
    assert any(i.data.get("disposition") == "informado" and i.text == "Tipificación: Información facilitada"
               for i in items)

    # Another agent cannot set one on a ticket that is not theirs.
    luis = await _login(client, "luis", staff["password"])
    t2 = await runtime.desk.tickets.create(channel="phone", queue="N1", subject="Otra")
    await client.post(f"/api/v1/tickets/{t2.ref}/claim", headers=ana)
    r = await client.post(f"/api/v1/tickets/{t2.ref}/disposition", json={"code": "cita"}, headers=luis)
    assert r.status_code == 403
    assert (await client.post(f"/api/v1/tickets/{t2.ref}/disposition", json={"code": "cita"}, headers=ana)).status_code == 200

    day = runtime.clock.now().date().isoformat()
    report = (await client.get(f"/api/v1/reports/dispositions?start={day}&end={day}",
                               headers={"X-API-Key": staff["ivr_key"]})).json()
    assert report["codes"]["informado"]["tickets"] == 1 and report["codes"]["cita"]["tickets"] == 1
    assert (await client.get("/api/v1/reports/dispositions", headers=ana)).status_code == 403

    # Rollback to the files' version: not required any more.
    assert (await client.post("/api/v1/admin/dispositions/rollback", json={"version": 0})).json()["version"] == 2
    assert (await client.get("/api/v1/dispositions", headers=ana)).json()["required"] is False


async def test_admin_lists_are_validated(client: httpx.AsyncClient) -> None:
    bad_queue = {"required": False, "codes": [{"code": "x", "label": "X", "queues": ["N9"]}]}
    r = await client.put("/api/v1/admin/dispositions", json=bad_queue)
    assert r.status_code == 422 and "N9" in r.json()["message"]
    repeated = {"codes": [{"code": "x", "label": "X"}, {"code": "x", "label": "Y"}]}
    assert (await client.put("/api/v1/admin/dispositions", json=repeated)).status_code == 422
    none_active = {"required": True, "codes": [{"code": "x", "label": "X", "active": False}]}
    assert (await client.put("/api/v1/admin/dispositions", json=none_active)).status_code == 422
    for text in ("Hola {nombre.__class__}", "{0}", "Hola {nombre} {dni}"):
        r = await client.put("/api/v1/admin/canned", json={"replies": [{"id": "a", "title": "A", "text": text}]})
        assert r.status_code == 422, text
        assert "unknown placeholders" in json.dumps(r.json())
    assert (await client.get("/api/v1/admin/canned")).json()["version"] == 0  # nothing stored


# ---- 7. canned replies --------------------------------------------------------------------------------------


async def test_canned_replies_filled_on_the_server(client: httpx.AsyncClient, runtime: Runtime,
                                                   staff: dict[str, str]) -> None:
    ana = await _login(client, "ana", staff["password"])
    citizen = await runtime.desk.citizens.identify("phone", "+34600111222", name="María {referencia} López")
    t = await runtime.desk.tickets.create(channel="webchat", queue="N1", subject="Padrón", citizen_id=citizen.id)
    await client.post(f"/api/v1/tickets/{t.ref}/claim", headers=ana)
    replies = (await client.get("/api/v1/canned?queue=N1", headers=ana)).json()
    ids = [r["id"] for r in replies]
    assert "saludo" in ids and "queja-recibida" not in ids

    r = await client.post(f"/api/v1/tickets/{t.ref}/canned/saludo/render", headers=ana)
    assert r.status_code == 200, r.text
    # The name is data: the braces in it are not filled again.
    assert r.json()["text"] == (f"Buenos días, María {{referencia}} López. Gracias por contactar con el Ayuntamiento. "
                                f"Su referencia es {t.ref[:3]}-{t.ref[3:]}.")
    r = await client.post(f"/api/v1/tickets/{t.ref}/canned/fuera-horario/render", headers=ana)
    # Monday 23 November 2026, 10:00 in Madrid, open now: the next opening is the afternoon's.
    assert r.json()["text"].startswith("Le atenderemos a partir de el lunes 23 de noviembre a las 16:00.")

    assert (await client.post(f"/api/v1/tickets/{t.ref}/canned/queja-recibida/render", headers=ana)).status_code == 404
    luis = await _login(client, "luis", staff["password"])
    assert (await client.post(f"/api/v1/tickets/{t.ref}/canned/saludo/render", headers=luis)).status_code == 403

    # An admin edit is live at once, versioned and audited.
    doc = {"replies": [{"id": "breve", "title": "Breve", "text": "{nombre}: {referencia}", "queues": ["N1"]}]}
    assert (await client.put("/api/v1/admin/canned", json=doc)).json()["version"] == 1
    r = await client.post(f"/api/v1/tickets/{t.ref}/canned/breve/render", headers=ana)
    assert r.json()["text"] == f"María {{referencia}} López: {t.ref[:3]}-{t.ref[3:]}"
    assert (await runtime.desk.audit.entries(5, target="canned"))[0]["action"] == "canned.update"


# ---- 8. SLA alerts ------------------------------------------------------------------------------------------


async def test_sla_warning_then_breach_once_each(client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock,
                                                 staff: dict[str, str], receiver: Receiver) -> None:
    _webhooks(runtime, receiver.url)
    ops = _ops(runtime)
    try:
        t = await runtime.desk.tickets.create(channel="email", queue="N1", subject="Licencia de obras")
        answered = await runtime.desk.tickets.create(channel="email", queue="N1", subject="Ya respondida")
        await runtime.desk.tickets.reply(answered.ref, "Le respondemos", actor="user:ana")
        assert await ops.sla.run_once() == 0
        clock.set(datetime(2026, 11, 23, 13, 30, tzinfo=MADRID))
        states = await ops.sla.states()  # answered in time: only its resolution runs, and it is far off
        assert [(s.sla, s.level) for s in states if s.ref == answered.ref] == [("resolution", "ok")]
        await runtime.desk.tickets.resolve(answered.ref, actor="user:ana")

        # 4 business hours from Monday 10:00: due at 14:00; 80 % (3 h 12 min) at 13:12.
        clock.set(datetime(2026, 11, 23, 13, 30, tzinfo=MADRID))
        sup = {"X-API-Key": staff["ivr_key"]}
        risk = (await client.get("/api/v1/sla/at-risk", headers=sup)).json()
        assert [(x["ref"], x["sla"], x["level"]) for x in risk["tickets"]] == [(t.ref, "first_response", "warning")]
        first = risk["tickets"][0]
        assert first["due"].startswith("2026-11-23T14:00") and 0.8 <= first["used"] < 1
        assert await ops.sla.run_once() == 1
        assert await ops.sla.run_once() == 0  # once per ticket, however many rounds

        # Past 14:30 closed time does not count; at 16:05 the first response is overdue.
        clock.set(datetime(2026, 11, 23, 16, 5, tzinfo=MADRID))
        assert await ops.sla.run_once() == 1
        # Resolution: 16 business hours -> Wednesday 10:00; 80 % on Tuesday at 16:18.
        clock.set(datetime(2026, 11, 24, 16, 20, tzinfo=MADRID))
        assert await ops.sla.run_once() == 1
        events = [e for _, e in await runtime.desk.events.recent(200) if str(e.get("type", "")).startswith("sla.")]
        assert [(e["type"], e["sla"]) for e in events] == [("sla.warning", "first_response"),
                                                           ("sla.breach", "first_response"),
                                                           ("sla.warning", "resolution")]
        assert "vencerá pronto" in events[0]["text"]
        # Supervisors see them; the agent of the queue does not (they are for supervisors).
        assert visible(EventView(everything=True, principal="user:sara"), events[0])
        assert not visible(EventView(everything=False, principal="user:ana", agent="ana", queues=frozenset({"N1"})),
                           events[0])
        assert (await client.get("/api/v1/sla/at-risk",
                                 headers=await _login(client, "ana", staff["password"]))).status_code == 403

        # The webhook: every alert, signed over the exact body; the first try met a 503 and was retried.
        assert await ops.sla.webhook.drain(10)
        bodies = [b for _, b in receiver.got]
        assert len(bodies) == 4  # 3 alerts + the retried first one
        for headers, body in receiver.got:
            assert verify(SECRET, body, headers[SIGNATURE_HEADER.lower()])
            assert not verify("otro-secreto-cualquiera", body, headers[SIGNATURE_HEADER.lower()])
        sent = [json.loads(b) for b in bodies[1:]]
        assert [s["event"] for s in sent] == ["sla.warning", "sla.breach", "sla.warning"]
        assert sent[0]["data"]["ref"] == f"{t.ref[:3]}-{t.ref[3:]}" and "subject" not in sent[0]["data"]
        assert ops.sla.webhook.sent == 3 and ops.sla.webhook.failed == 0
    finally:
        await ops.close()


async def test_webhook_never_blocks_and_gives_up(runtime: Runtime) -> None:
    """A dead endpoint: submit returns at once, the retries are bounded, the queue is bounded."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/x"
    _webhooks(runtime, dead)
    runtime.settings.desk.sla.webhook.queue_max = 3
    ops = _ops(runtime)
    try:
        loop_t0 = runtime.clock.monotonic()
        for i in range(5):
            assert ops.sla.webhook.submit("sla.test", {"i": i})
        assert runtime.clock.monotonic() == loop_t0
        assert ops.sla.webhook.dropped == 2
        assert await ops.sla.webhook.drain(20)
        assert ops.sla.webhook.failed == 3 and ops.sla.webhook.sent == 0
    finally:
        await ops.close()


# ---- 11. call detail records --------------------------------------------------------------------------------


def test_mask_caller() -> None:
    assert mask_caller("+34 600 123 123") == "••••••••123"
    assert mask_caller("sip:600123456@proveedor.example;user=phone") == "••••••456"
    assert mask_caller("600123456", keep=0) == "•••••••••"
    assert mask_caller("1234") == "•••4"  # short numbers keep less than they hide
    assert mask_caller("anonymous") == "•••••••••"
    assert mask_caller(None) == ""


async def test_cdr_export_and_disposition_on_calls(client: httpx.AsyncClient, runtime: Runtime,
                                                   staff: dict[str, str]) -> None:
    await _call(runtime, "c-ana", said="=HYPERLINK(\"http://x\")")
    await _call(runtime, "c-self", caller="sip:600999888@127.0.0.1", agent=None)
    ana = await _login(client, "ana", staff["password"])
    luis = await _login(client, "luis", staff["password"])
    r = await client.post("/api/v1/calls/c-ana/disposition", json={"code": "cita"}, headers=luis)
    assert r.status_code == 403 and r.json()["error_id"] == "not-your-call"
    r = await client.post("/api/v1/calls/c-ana/disposition", json={"code": "no-existe"}, headers=ana)
    assert r.status_code == 422
    r = await client.post("/api/v1/calls/c-ana/disposition", json={"code": "cita"}, headers=ana)
    assert r.status_code == 200 and r.json()["disposition"]["label"] == "Cita concertada"
    entries = await runtime.desk.audit.entries(5, target="c-ana")
    assert entries[0]["action"] == "call.disposition" and entries[0]["actor"] == "user:ana"

    # during the call: its record does not name the agent yet (saved when the queue step ends); the live entry does
    await _call(runtime, "c-now", agent=None, ended=False)
    await runtime.store.redis.set(runtime.store.keys.call_live("c-now"), json.dumps({"agent": "ana", "queue": "N1"}))
    r = await client.post("/api/v1/calls/c-now/disposition", json={"code": "cita"}, headers=luis)
    assert r.status_code == 403 and r.json()["error_id"] == "not-your-call"
    r = await client.post("/api/v1/calls/c-now/disposition", json={"code": "cita"}, headers=ana)
    assert r.status_code == 200 and r.json()["disposition"]["code"] == "cita", r.text

    sup = {"X-API-Key": staff["ivr_key"]}
    assert (await client.get("/api/v1/cdr.csv", headers=ana)).status_code == 403
    assert (await client.get("/api/v1/cdr.csv?since=ayer", headers=sup)).status_code == 422
    assert (await client.get("/api/v1/cdr.csv?since=2026-11-23T00:00:00", headers=sup)).status_code == 422
    r = await client.get("/api/v1/cdr.csv?since=2026-11-23&until=2026-11-23", headers=sup)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["call_id"] for row in rows} == {"c-ana", "c-self"}
    row = next(x for x in rows if x["call_id"] == "c-ana")
    assert row["caller"] == "••••••••123" and "600" not in r.text
    assert row["disposition"] == "cita" and row["disposition_label"] == "Cita concertada"
    assert row["agent"] == "ana" and row["queue"] == "N1" and row["survey"] == "4" and row["outcome"] == "transferred"
    assert row["ivr_path"] == "main:say:saludo > main:enqueue"
    assert (row["wait_s"], row["estimated_wait_s"], row["supervised_by"], row["recordings"]) == (
        "42.0", "60", "user:sara", "rec-1; rec-2")
    selfservice = next(x for x in rows if x["call_id"] == "c-self")
    assert (selfservice["wait_s"], selfservice["supervised_by"], selfservice["recordings"]) == ("", "", "")
    assert not any(v.startswith(("=", "+", "-", "@")) for x in rows for v in x.values())
    assert (await client.get("/api/v1/cdr.csv?since=2026-11-24", headers=sup)).text.count("\n") == 1  # header only
    one = (await client.get("/api/v1/calls/c-ana/cdr", headers=sup)).json()
    assert one["disposition"] == "cita" and one["caller"] == "••••••••123"


async def test_cdr_webhook_per_finished_call(client: httpx.AsyncClient, runtime: Runtime, staff: dict[str, str],
                                             receiver: Receiver) -> None:
    _webhooks(runtime, receiver.url)
    ops = _ops(runtime)
    try:
        rec = await _call(runtime, "c-hook")
        ops.cdr.call_ended(rec)  # what the composition root does when IvrService.run returns
        chat = rec.model_copy(update={"call_id": "chat-1", "channel": "chat"})
        ops.cdr.call_ended(chat)  # chats have no CDR
        assert await ops.cdr.drain(10)
        assert len(receiver.got) == 2  # a 503, then the retry
        headers, body = receiver.got[-1]
        assert verify(SECRET, body, headers[SIGNATURE_HEADER.lower()]) and headers["x-atiende-event"] == "call.ended"
        data = json.loads(body)
        assert data["event"] == "call.ended" and re.fullmatch(r"[0-9a-f]{24}", data["id"])
        assert data["data"]["call_id"] == "c-hook" and data["data"]["caller"] == "••••••••123"
        assert data["data"]["disposition"] is None and data["data"]["survey"] == 4

        # The agent sets the disposition in wrap-up, after the call: the CRM gets the completed record.
        ana = await _login(client, "ana", staff["password"])
        assert (await client.post("/api/v1/calls/c-hook/disposition", json={"code": "informado"},
                                  headers=ana)).status_code == 200
        app_ops = _app_ops(client)
        assert await app_ops.cdr.drain(10)
        headers, body = receiver.got[-1]
        assert verify(SECRET, body, headers[SIGNATURE_HEADER.lower()])
        assert json.loads(body)["event"] == "call.disposition"
        assert json.loads(body)["data"]["disposition"] == "informado"
        await app_ops.close()
    finally:
        await ops.close()


def _app_ops(client: httpx.AsyncClient) -> Operations:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    ops = transport.app.state.operations  # type: ignore[attr-defined]
    assert isinstance(ops, Operations)
    return ops


async def test_sla_job_runs_on_one_node_under_its_lease(runtime: Runtime, clock: FixedClock) -> None:
    """What `atiende run` starts (atiende/components.py): two nodes, one lease; the alert goes out once."""
    import asyncio

    from atiende.components import SlaComponent
    from core.lease import holder_of

    t = await runtime.desk.tickets.create(channel="email", queue="N1", subject="Licencia")
    clock.set(datetime(2026, 11, 23, 13, 30, tzinfo=MADRID))
    nodes = [SlaComponent(runtime), SlaComponent(runtime)]
    for node in nodes:
        await node.start()
    try:
        for _ in range(100):
            events = [e for _, e in await runtime.desk.events.recent(50) if e.get("type") == "sla.warning"]
            if events:
                break
            await asyncio.sleep(0.05)
        assert [e["ref"] for e in events] == [t.ref]
        held = await holder_of(runtime.store, "sla")
        assert held is not None and held[1] == runtime.settings.service.node_id
        await asyncio.sleep(0.3)
        assert len([e for _, e in await runtime.desk.events.recent(50) if e.get("type") == "sla.warning"]) == 1
    finally:
        for node in nodes:
            await node.stop()


async def test_a_holder_that_lost_the_sla_lease_sends_no_alert(runtime: Runtime, clock: FixedClock) -> None:
    """Check-then-act: a node paused past its lease (GC, a frozen VM) assessed the tickets, woke up and alerted on
    what it saw before, beside the new holder. The alert is noted only while the lease is still its own."""
    from core.lease import LeaseLost, acquire

    await runtime.desk.tickets.create(channel="email", queue="N1", subject="Licencia")
    clock.set(datetime(2026, 11, 23, 13, 30, tzinfo=MADRID))
    ops = _ops(runtime)
    try:
        stale = await acquire(runtime.store, "sla", "node-a", 15.0)
        assert stale is not None
        await runtime.store.redis.delete(runtime.store.keys.lease("sla"))  # expired while node-a was paused
        fresh = await acquire(runtime.store, "sla", "node-b", 15.0)
        assert fresh is not None and fresh.token > stale.token
        with pytest.raises(LeaseLost):
            await ops.sla.run_once(stale)
        assert not [e for _, e in await runtime.desk.events.recent(50) if e.get("type", "").startswith("sla.")]
        assert await ops.sla.run_once(fresh) == 1  # nothing was noted by the stale one: the holder alerts once
    finally:
        await ops.close()
