"""Erasure and retention take the files with the data: the recordings of agent calls (every copy: this node's disk,
Redis, the shared directory) and the files citizens sent (ticket attachments, files waiting for a ticket),
counted in the erasure summary, the retention round and their audit entries."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from core.audio import FRAME_SAMPLES
from core.clock import FixedClock, ShiftedClock
from desk.models import Interaction
from desk.privacy import PrivacyService
from desk_api.channels import media
from ivr.conference import Recorder
from tests.conftest import STAFF_PASSWORD
from voicemail.storage import SharedDirRecordings

pytestmark = pytest.mark.anyio

JPEG = b"\xff\xd8\xff\xe0" + b"justificante de la beca de Marta" * 40
PDF = b"%PDF-1.4 certificado de empadronamiento de Marta"


async def _recording(runtime: Runtime, call_id: str, rec_id: str) -> Path:
    """A finished agent-call recording as ivr/conference.py leaves it: WAV on disk, copy in the shared store
    (Redis by default), its record, the retention index and the call's list."""
    store = runtime.store
    rec = Recorder(runtime.data_dir / "voicemail", rec_id)
    await rec.open()
    for _ in range(50):
        rec.sink(struct.pack(f"<{FRAME_SAMPLES}h", *([1500] * FRAME_SAMPLES)))
    path, digest = await rec.finish()
    await runtime.recordings.put(rec_id, path)
    meta = {"id": rec_id, "call_id": call_id, "agent": "ana", "queue": "N1", "state": "done", "duration_s": 1.0,
            "started_at": runtime.clock.now().isoformat(), "sha256": digest, "pauses": []}
    await store.redis.set(store.keys.call_recording(rec_id), json.dumps(meta))
    await store.redis.zadd(store.keys.call_recordings, {rec_id: runtime.clock.now().timestamp()})
    await store.redis.rpush(store.keys.call_recordings_of(call_id), rec_id)
    return path


async def _citizen_with_files(runtime: Runtime, phone: str, call_id: str, rec_id: str) -> dict[str, Any]:
    """A WhatsApp citizen who sent a photo on a ticket, a PDF still waiting for a ticket, and called: the call was
    taken by an agent and recorded."""
    desk, store = runtime.desk, runtime.store
    c = await desk.citizens.identify("whatsapp", phone, name="Marta Ruiz")
    photo = await media.store(runtime, media.MediaRef(kind="image", filename="beca.jpg", content_type="image/jpeg"),
                              JPEG, "image/jpeg")
    first = Interaction(kind="message", channel="whatsapp", actor="citizen", direction="in",
                        text="Le envío la foto del justificante", data={"attachments": [photo]})
    t = await desk.tickets.create(channel="whatsapp", queue="N1", subject="Beca de comedor", kind="query",
                                  citizen_id=c.id, trace_id=f"tr-{call_id}", body=first.text, actor="assistant",
                                  first=first)
    waiting = await media.store(runtime, media.MediaRef(kind="document", filename="padron.pdf",
                                                        content_type="application/pdf"), PDF, "application/pdf")
    await store.redis.rpush(store.keys.channel_attachments("whatsapp", phone), json.dumps(waiting))
    record = {"call_id": call_id, "trace_id": f"tr-{call_id}", "caller": f"+{phone}",
              "started_at": runtime.clock.now().isoformat(), "transcripts": [{"text": "mi beca"}], "ticket_ref": t.ref,
              "path": []}
    await store.redis.set(store.keys.call(call_id), json.dumps(record))
    await store.redis.zadd(store.keys.calls, {call_id: runtime.clock.now().timestamp()})
    wav = await _recording(runtime, call_id, rec_id)
    return {"citizen": c.id, "ref": t.ref, "photo": runtime.data_dir / photo["path"], "sha256": photo["sha256"],
            "waiting": runtime.data_dir / waiting["path"], "wav": wav}


async def test_erasure_deletes_call_recordings_and_attachments(client: httpx.AsyncClient, runtime: Runtime,
                                                               staff: dict[str, str]) -> None:
    rec_id = "rec-0000000000000000e1a5"
    got = await _citizen_with_files(runtime, "34600111222", "c-erase-1", rec_id)
    store = runtime.store
    for path in (got["photo"], got["waiting"], got["wav"]):
        assert path.is_file()
    assert await store.redis.get(store.keys.voicemail_audio(rec_id)) is not None
    # an agent's reply held for WhatsApp's window (its text), and the template announcing the hold
    await store.redis.rpush(store.keys.channel_pending("whatsapp", "34600111222"), json.dumps({"text": "Su beca..."}))
    await store.redis.set(store.keys.channel_pending_template("whatsapp", "34600111222"), "1")
    admin = {"Authorization": f"Bearer {(await runtime.desk.auth.login('admin', STAFF_PASSWORD)).token}"}
    r = await client.get(f"/api/v1/tickets/{got['ref']}/attachments/{got['sha256']}", headers=admin)
    assert r.status_code == 200 and r.content == JPEG

    r = await client.post(f"/api/v1/citizens/{got['citizen']}/erase", headers=admin)
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["call_recordings_deleted"] == 1 and summary["attachments_deleted"] == 2, summary
    assert summary["tickets_anonymised"] == 1 and summary["calls_anonymised"] == 1

    # every copy of the recording is gone; its record stays and says so; retention has nothing left to do with it
    assert not got["wav"].exists() and not got["wav"].with_name(got["wav"].name + ".part").exists()
    assert await store.redis.get(store.keys.voicemail_audio(rec_id)) is None
    assert json.loads(str(await store.redis.get(store.keys.call_recording(rec_id))))["deleted"] is True
    assert await store.redis.zscore(store.keys.call_recordings, rec_id) is None
    r = await client.get(f"/api/v1/recordings/{rec_id}/audio", headers=admin)
    assert r.status_code == 404 and r.json()["error_id"] == "recording-deleted"
    # the files the citizen sent: the ticket's photo and the PDF that waited for a ticket
    assert not got["photo"].exists() and not got["waiting"].exists()
    assert await store.redis.exists(store.keys.channel_attachments("whatsapp", "34600111222")) == 0
    assert await store.redis.exists(store.keys.channel_pending("whatsapp", "34600111222"),
                                    store.keys.channel_pending_template("whatsapp", "34600111222")) == 0
    r = await client.get(f"/api/v1/tickets/{got['ref']}/attachments/{got['sha256']}", headers=admin)
    assert r.status_code == 404
    # the audit entry counts them, without personal data
    [entry] = [e for e in await runtime.desk.audit.entries(count=50, target=got["citizen"])
               if e["action"] == "citizen.erase"]
    assert entry["details"]["call_recordings_deleted"] == 1 and entry["details"]["attachments_deleted"] == 2
    assert "Marta" not in json.dumps(entry) and "600111222" not in json.dumps(entry)
    # a second erasure request finds nothing: the citizen is gone
    assert (await client.post(f"/api/v1/citizens/{got['citizen']}/erase", headers=admin)).status_code == 404


async def test_erasure_deletes_the_shared_directory_copy(runtime: Runtime, tmp_path: Path) -> None:
    """With voicemail.storage shared_dir the finished recording is copied to the directory every node mounts:
    that copy goes too."""
    shared = tmp_path / "shared"
    rec_id = "rec-00000000000000005a1d"
    wav = await _recording(runtime, "c-shared", rec_id)
    await SharedDirRecordings(shared, runtime.store, "node-1").put(rec_id, wav)
    assert (shared / f"{rec_id}.wav").is_file()
    desk = runtime.desk
    privacy = PrivacyService(runtime.store, runtime.clock, desk.citizens, desk.tickets, desk.audit,
                             lambda: runtime.data_dir, shared_dir=lambda: shared)
    assert await privacy.delete_call_recordings("c-shared") == 1
    assert not (shared / f"{rec_id}.wav").exists() and not wav.exists()
    assert await privacy.delete_call_recordings("c-shared") == 0  # already deleted: not counted twice
    # an id that is not a recording's never becomes a path
    assert await privacy.delete_call_recording("rec-../../etc/passwd") is False
    assert await privacy.delete_attachments([{"path": "../outside.txt"}, {"path": "attachments/../../x"}]) == 0


async def test_retention_deletes_files_with_the_ticket_and_the_call(runtime: Runtime, clock: FixedClock,
                                                                    staff: dict[str, str]) -> None:
    """A closed ticket anonymised by retention loses its files, and an expired call record its recordings, in the
    same round, even when recordings are kept for ever (recordings_days 0): both are counted and audited."""
    desk, store = runtime.desk, runtime.store
    policy = runtime.settings.desk.retention
    policy.tickets_days, policy.citizens_days, policy.calls_days, policy.recordings_days, policy.audit_days = 30, 0, 10, 0, 0
    rec_id = "rec-000000000000000a11ce"
    got = await _citizen_with_files(runtime, "34600333444", "c-ret-1", rec_id)
    await desk.tickets.close(got["ref"], actor="user:admin", note="resuelto")
    assert (await desk.retention.run_once())["attachments"] == 0 and got["photo"].exists()

    runtime.clock = ShiftedClock(clock.now() + timedelta(days=40))
    out = await desk.retention.run_once()
    assert out["tickets"] == 1 and out["calls"] == 1, out
    assert out["attachments"] == 1 and out["call_recordings"] == 1, out
    assert not got["photo"].exists() and not got["wav"].exists()
    assert await store.redis.get(store.keys.voicemail_audio(rec_id)) is None
    assert json.loads(str(await store.redis.get(store.keys.call_recording(rec_id))))["deleted"] is True
    assert got["waiting"].exists()  # the citizen is kept (citizens_days 0): their waiting file expires with its key
    [entry] = [e for e in await desk.audit.entries(count=50, actor="retention") if e["action"] == "retention.run"]
    assert entry["details"]["attachments"] == 1 and entry["details"]["call_recordings"] == 1
    assert hashlib.sha256(JPEG).hexdigest() not in json.dumps(await desk.tickets.interactions(got["ref"]),
                                                               default=str)
