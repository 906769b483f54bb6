"""Recording of agent calls (issue 18.6) without SIP: the recorder's pauses, the pause/resume API (the agent on
the call only), listening through the audited endpoint only, and retention. The real call is in
tests/test_supervision_e2e.py (consent notice, both sides mixed, a pause)."""

from __future__ import annotations

import asyncio
import json
import struct
import wave
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from atiende.runtime import Runtime
from core.audio import FRAME_SAMPLES
from ivr.conference import Recorder
from tests.test_supervision import _live_call, _login

pytestmark = pytest.mark.anyio


def level(value: int) -> bytes:
    return struct.pack(f"<{FRAME_SAMPLES}h", *([value] * FRAME_SAMPLES))


async def test_nothing_is_written_while_paused(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "rec-0123456789abcdef0123")
    await rec.open()
    for _ in range(50):
        rec.sink(level(1000))
    rec.pause("t1")
    for _ in range(100):
        rec.sink(level(-7000))  # the caller's card number
    await rec.flush()
    rec.resume("t2")
    for _ in range(25):
        rec.sink(level(2000))
    path, digest = await rec.finish()
    assert path.name == "rec-0123456789abcdef0123.wav" and not rec.part.exists() and len(digest) == 64
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        samples = struct.unpack(f"<{w.getnframes()}h", w.readframes(w.getnframes()))
    assert len(samples) == 75 * FRAME_SAMPLES and -7000 not in samples
    assert [(p.at_s, p.paused_at, p.resumed_at) for p in rec.pauses] == [(1.0, "t1", "t2")]


async def _recorded_call(runtime: Runtime, call_id: str, rec_id: str) -> None:
    await _live_call(runtime, call_id, recording=True, recording_id=rec_id)
    store = runtime.store
    meta = {"id": rec_id, "call_id": call_id, "agent": "ana", "queue": "N1", "state": "done", "duration_s": 1.0,
            "started_at": runtime.clock.now().isoformat(), "pauses": []}
    await store.redis.set(store.keys.call_recording(rec_id), json.dumps(meta))
    await store.redis.zadd(store.keys.call_recordings, {rec_id: runtime.clock.now().timestamp()})
    await store.redis.rpush(store.keys.call_recordings_of(call_id), rec_id)
    rec = Recorder(runtime.data_dir / "voicemail", rec_id)
    await rec.open()
    for _ in range(50):
        rec.sink(level(1500))
    path, _ = await rec.finish()
    await runtime.recordings.put(rec_id, path)


async def test_pause_resume_listen_and_retention(runtime: Runtime, client: httpx.AsyncClient,
                                                 staff: dict[str, str]) -> None:
    rec_id = "rec-00000000000000000001"
    await _recorded_call(runtime, "c-r1", rec_id)
    await _live_call(runtime, "c-plain")
    store, desk = runtime.store, runtime.desk
    ana, luis, sup = await _login(client, "ana"), await _login(client, "luis"), await _login(client, "supervisora")

    # the agent on the call pauses and resumes; another agent may not; an unrecorded call says so
    r = await client.post("/api/v1/calls/c-r1/recording", headers=luis, json={"action": "pause"})
    assert r.status_code == 403
    r = await client.post("/api/v1/calls/c-r1/recording", headers=ana, json={"action": "pause"})
    assert r.status_code == 202 and await store.redis.get(store.keys.call_recording_state("c-r1")) == "paused"
    assert (await client.post("/api/v1/calls/c-r1/recording", headers=ana, json={"action": "stop"})).status_code == 422
    r = await client.post("/api/v1/calls/c-r1/recording", headers=ana, json={"action": "resume"})
    assert r.status_code == 202 and await store.redis.get(store.keys.call_recording_state("c-r1")) == "recording"
    r = await client.post("/api/v1/calls/c-plain/recording", headers=ana, json={"action": "pause"})
    assert r.status_code == 409 and r.json()["error_id"] == "not-recorded"

    # listed on the call, heard by supervisors only, each listen audited; never through the voicemail route
    listed = (await client.get("/api/v1/calls/c-r1/recordings", headers=sup)).json()["recordings"]
    assert [x["id"] for x in listed] == [rec_id] and listed[0]["audio"] == f"/api/v1/recordings/{rec_id}/audio"
    assert (await client.get(f"/api/v1/recordings/{rec_id}/audio", headers=ana)).status_code == 403
    assert (await client.get(f"/api/v1/voicemails/{rec_id}/audio", headers=ana)).status_code == 404
    audio = await client.get(f"/api/v1/recordings/{rec_id}/audio", headers=sup)
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav" and len(audio.content) > 16000
    for bad in ("rec-../../etc/passwd", "rec-XYZ", "call-1"):
        assert (await client.get(f"/api/v1/recordings/{bad}/audio", headers=sup)).status_code in (404, 422)
    entries = await desk.audit.entries(count=50)
    assert [(e["actor"], e["target"]) for e in entries if e["action"] == "recording.listened"] == [
        ("user:supervisora", rec_id)]
    assert {e["action"] for e in entries} >= {"call.recording.pause", "call.recording.resume"}

    # retention: after recordings_days the audio goes, the record stays and says so
    policy = runtime.settings.desk.retention
    policy.recordings_days = 30
    wav = runtime.data_dir / "voicemail" / f"{rec_id}.wav"
    assert wav.exists()
    from core.clock import ShiftedClock

    runtime.clock = ShiftedClock(runtime.clock.now() + timedelta(days=31))
    out = await desk.retention.run_once()
    assert out["call_recordings"] == 1 and not wav.exists()
    assert await store.redis.get(store.keys.voicemail_audio(rec_id)) is None
    assert json.loads(str(await store.redis.get(store.keys.call_recording(rec_id))))["deleted"] is True
    r = await client.get(f"/api/v1/recordings/{rec_id}/audio", headers=sup)
    assert r.status_code == 404 and r.json()["error_id"] == "recording-deleted"


async def test_a_recording_cut_by_a_crash_is_finished_at_start_up_and_not_filed_as_a_voicemail(
        runtime: Runtime) -> None:
    from atiende.components import VoicemailComponent

    rec_id = "rec-" + "c" * 20
    store = runtime.store
    await store.redis.set(store.keys.call_recording(rec_id), json.dumps({"id": rec_id, "call_id": "c-crash",
                                                                         "state": "recording"}))
    rec = Recorder(runtime.data_dir / "voicemail", rec_id)
    await rec.open()
    for _ in range(50):
        rec.sink(level(1500))
    await rec.flush()  # and the node is killed: the part stays, its header says nothing was written
    component = VoicemailComponent(runtime)
    await asyncio.wait_for(component.start(), 60)  # a bound, not a measure: a hang fails here, with its stack
    try:
        meta = json.loads(str(await store.redis.get(store.keys.call_recording(rec_id))))
        assert meta["state"] == "done" and meta["recovered"] and meta["duration_s"] == 1.0
        assert await runtime.recordings.get(rec_id) is not None  # in the shared store, playable from any node
        assert (await runtime.desk.tickets.query(limit=10)) == []  # no "voicemail" made of the conversation
    finally:
        await asyncio.wait_for(component.stop(), 60)
