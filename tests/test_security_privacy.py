"""Issue 16, finding 9: numbers masked in logs, citizen export and erasure for admins (audited), retention enforced."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta

import httpx
import pytest

from atiende.runtime import Runtime
from core.clock import FixedClock
from core.logs import mask_number
from tests.conftest import STAFF_PASSWORD

pytestmark = pytest.mark.anyio


def test_numbers_are_masked_for_logs() -> None:
    assert mask_number("+34600123123") == "+34 6•• ••• 123"
    assert mask_number("sip:600123123@127.0.0.2") == "6•• ••• 123@127.0.0.2"
    assert "600123" not in mask_number("0034600123123") and mask_number("anonymous") == "•••••••••"


async def _voice_ticket(runtime: Runtime, phone: str, call_id: str, when: datetime) -> str:
    """A voicemail ticket, its call record and its recording on disk, as the IVR and voicemail leave them."""
    desk = runtime.desk
    store = runtime.store
    c = await desk.citizens.identify("phone", phone, name="Marta Ruiz")
    from desk.models import Interaction

    first = Interaction(kind="voicemail", channel="phone", actor="ivr", direction="in",
                        text="Soy Marta, llamo por la beca", data={"call_id": call_id, "recording": f"/x/{call_id}"})
    t = await desk.tickets.create(channel="phone", queue="N1", subject="Mensaje de voz", kind="voicemail", citizen_id=c.id,
                                  trace_id=f"tr-{call_id}", body=first.text, actor="ivr", first=first,
                                  meta={"voicemail": call_id})
    record = {"call_id": call_id, "trace_id": f"tr-{call_id}", "caller": phone, "started_at": when.isoformat(),
              "transcripts": [{"text": "la beca de comedor"}], "ticket_ref": t.ref, "intent": "becas", "path": []}
    await store.redis.set(store.keys.call(call_id), json.dumps(record))
    await store.redis.zadd(store.keys.calls, {call_id: when.timestamp()})
    folder = runtime.data_dir / "voicemail"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{call_id}.wav").write_bytes(b"RIFF....WAVE")
    return t.ref


async def test_export_and_erasure_for_admins_only(client: httpx.AsyncClient, runtime: Runtime, clock: FixedClock,
                                                  staff: dict[str, str]) -> None:
    ref = await _voice_ticket(runtime, "600444555", "call-exp-1", clock.now())
    desk = runtime.desk
    cid = (await desk.tickets.get(ref)).citizen_id
    ana = {"Authorization": f"Bearer {(await desk.auth.login('ana', STAFF_PASSWORD)).token}"}
    admin = {"Authorization": f"Bearer {(await desk.auth.login('admin', STAFF_PASSWORD)).token}"}
    assert (await client.get(f"/api/v1/citizens/{cid}/export", headers=ana)).status_code == 403
    assert (await client.post(f"/api/v1/citizens/{cid}/erase", headers=ana)).status_code == 403
    doc = (await client.get(f"/api/v1/citizens/{cid}/export", headers=admin)).json()
    assert doc["citizen"]["name"] == "Marta Ruiz" and doc["tickets"][0]["ticket"]["ref"] == ref
    assert "Soy Marta" in json.dumps(doc) and doc["calls"][0]["caller"] == "600444555"
    r = await client.post(f"/api/v1/citizens/{cid}/erase", headers=admin)
    assert r.status_code == 200 and r.json()["tickets_anonymised"] == 1 and r.json()["calls_anonymised"] == 1
    # nothing personal is left: identity, ticket texts, transcript, call record, recording
    assert await desk.citizens.find("phone", "600444555") is None
    assert (await client.get(f"/api/v1/citizens/{cid}", headers=admin)).status_code == 404
    t = (await client.get(f"/api/v1/tickets/{ref}", headers=admin)).json()
    dumped = json.dumps(t, ensure_ascii=False)
    assert "Marta" not in dumped and "beca" not in dumped and t["ticket"]["citizen_id"] is None
    assert t["ticket"]["kind"] == "voicemail" and t["ticket"]["queue"] == "N1"  # kept for statistics
    call = json.loads(str(await runtime.store.redis.get(runtime.store.keys.call("call-exp-1"))))
    assert call["caller"] == "" and call["transcripts"] == [] and call["intent"] == "becas"
    assert not (runtime.data_dir / "voicemail" / "call-exp-1.wav").exists()
    audit = (await client.get("/api/v1/audit", headers=admin, params={"target": cid})).json()["entries"]
    assert {"citizen.export", "citizen.erase"} <= {e["action"] for e in audit}
    assert "600444555" not in json.dumps(audit) and "Marta" not in json.dumps(audit)
    # a new call from the same number is a new citizen, with nothing of the old one
    again = await desk.citizens.identify("phone", "600444555")
    assert again.id != cid and again.name is None


async def test_retention_job_anonymises_and_deletes_what_is_old(runtime: Runtime, clock: FixedClock,
                                                               staff: dict[str, str]) -> None:
    desk = runtime.desk
    store = runtime.store
    policy = runtime.settings.desk.retention
    policy.tickets_days, policy.citizens_days, policy.calls_days, policy.recordings_days, policy.audit_days = 30, 30, 10, 5, 1
    await store.redis.delete(store.keys.audit)  # stream ids only grow: the old entry goes in first
    await store.redis.xadd(store.keys.audit, {"actor": "x", "action": "viejo"}, id=f"{int((time.time() - 3 * 86400) * 1000)}-0")
    old_ref = await _voice_ticket(runtime, "600777888", "call-old", clock.now())
    await desk.tickets.close(old_ref, actor="user:admin", note="resuelto")
    new_ref = await _voice_ticket(runtime, "600999000", "call-new", clock.now())
    os.utime(runtime.data_dir / "voicemail" / "call-old.wav", (time.time() - 30 * 86400,) * 2)
    first = await desk.retention.run_once()
    assert first["recordings"] == 1 and first["tickets"] == 0  # only the recording is old yet
    assert not (runtime.data_dir / "voicemail" / "call-old.wav").exists()
    assert (runtime.data_dir / "voicemail" / "call-new.wav").exists()
    # 40 days later: the closed ticket is anonymised and its citizen erased; the open one is kept whole
    clock.set(clock.now() + timedelta(days=40))
    out = await desk.retention.run_once()
    assert out["tickets"] == 1 and out["citizens"] == 1 and out["calls"] >= 1  # the erasure did the old call
    old = await desk.tickets.get(old_ref)
    assert old.meta == {"anonymised": True} and old.citizen_id is None and old.status == "closed"
    assert await desk.citizens.find("phone", "600777888") is None
    assert (await desk.tickets.get(new_ref)).subject == "Mensaje de voz"
    assert await desk.citizens.find("phone", "600999000") is not None  # an active ticket keeps its citizen
    calls = [json.loads(str(await store.redis.get(store.keys.call(c)))) for c in ("call-old", "call-new")]
    assert all(c["caller"] == "" and c["transcripts"] == [] for c in calls)
    assert "viejo" not in {e["action"] for e in await desk.audit.entries(count=1000)}  # audit older than a day: gone
    assert await desk.retention.run_once() == {"tickets": 0, "citizens": 0, "calls": 0, "recordings": 0, "call_recordings": 0,
                                                   "attachments": 0, "audit": 0}
    entries = await desk.audit.entries(count=50, actor="retention")
    assert "retention.run" in {e["action"] for e in entries}
