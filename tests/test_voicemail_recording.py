"""Durable voicemail files: complete messages, and what a crash leaves behind."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from core.audio import FRAME_BYTES
from core.clock import FixedClock
from core.ids import contact_id
from core.store import Store
from ivr.conference import RECORDING_PREFIX, Recorder
from voicemail import call_recordings
from voicemail.recording import VoicemailWriter, file_id, read_pcm, recover
from voicemail.storage import LocalRecordings


def _tone(n_frames: int) -> list[bytes]:
    out = []
    for f in range(n_frames):
        samples = [int(8000 * math.sin(2 * math.pi * 440 * (f * 160 + i) / 8000)) for i in range(160)]
        out.append(struct.pack("<160h", *samples))
    return out


def test_finished_message_is_a_valid_wav(tmp_path: Path) -> None:
    w = VoicemailWriter(tmp_path, "call-1")
    frames = _tone(150)
    for f in frames:
        w.write(f)
    rec = w.finish()
    assert rec.complete and rec.path.name == "call-1.wav" and not w.part_path.exists()
    assert rec.duration_s == pytest.approx(3.0)
    with wave.open(str(rec.path)) as wf:
        assert (wf.getframerate(), wf.getnchannels(), wf.getsampwidth()) == (8000, 1, 2)
    assert read_pcm(rec.path) == b"".join(frames)
    assert len(rec.sha256) == 64


@pytest.mark.parametrize("call_id", ["../etc/passwd", "..", ".hidden", "x/y", "a" * 300, "rec-0123456789abcdef0123",
                                     "a\x00b", "ñandú@host"])
def test_a_call_id_the_caller_chose_stays_a_safe_name_in_the_directory(tmp_path: Path, call_id: str) -> None:
    """The Call-ID is the caller's text: a path, a name too long for the disk (the message would be lost), or the
    shape of an agent-call recording's id (whose files share the directory) is hashed, not refused."""
    w = VoicemailWriter(tmp_path, call_id)
    try:
        assert w.part_path.parent == tmp_path / "voicemail" and re.fullmatch(r"(c|vm)-[0-9a-f]{32}", w.call_id)
        assert w.call_id == file_id(call_id) == file_id(w.call_id)  # stable: the same call, the same message
    finally:
        w.abort()
    assert file_id("5f2a9c@10.0.0.1") == "5f2a9c@10.0.0.1"  # an ordinary Call-ID is kept, so logs match


def test_a_call_id_cannot_name_another_calls_keys() -> None:
    """Call ids become key segments (`call:<id>:live`): "x:live" would have written call x's live entry."""
    for raw in ("x:live", "x:transfer", "x:supervise", "a b", "x/../y", "ü" * 10):
        cid = contact_id(raw)
        assert cid != raw and re.fullmatch(r"c-[0-9a-f]{32}", cid) and contact_id(raw) == cid
    assert contact_id("3848276298220188511-203.0.113.1@carrier.example") == "3848276298220188511-203.0.113.1@carrier.example"


@pytest.mark.anyio
async def test_a_crash_during_a_recorded_agent_call_is_not_a_voicemail(tmp_path: Path, store: Store,
                                                                       clock: FixedClock) -> None:
    """Agent-call recordings are written beside the voicemails: after a crash the part was filed as a voicemail
    (a private conversation as a ticket in the voicemail queue) and the recording stayed "recording" for ever."""
    rec = Recorder(tmp_path / "voicemail", RECORDING_PREFIX + "0" * 20)
    await rec.open()
    for f in _tone(100):
        rec.sink(f)
    await rec.flush()  # then the node dies: no finish(), the header still says 0 frames
    await store.redis.set(store.keys.call_recording(rec.recording_id),
                          json.dumps({"id": rec.recording_id, "call_id": "c-1", "state": "recording"}))
    assert recover(tmp_path) == []
    assert await call_recordings.recover(tmp_path, store, LocalRecordings(tmp_path), clock) == [rec.recording_id]
    meta = json.loads(str(await store.redis.get(store.keys.call_recording(rec.recording_id))))
    assert meta["state"] == "done" and meta["recovered"] and meta["incomplete"] and meta["call_id"] == "c-1"
    assert meta["duration_s"] == pytest.approx(2.0)
    wav = await LocalRecordings(tmp_path).get(rec.recording_id)
    assert wav is not None and len(wav) == 44 + 100 * FRAME_BYTES
    assert await call_recordings.recover(tmp_path, store, None, clock) == []  # once


_CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from voicemail.recording import VoicemailWriter
w = VoicemailWriter(Path({data!r}), "crash-1")
frame = bytes(range(256)) + bytes(64)
n = 0
while True:
    w.write(frame)
    n += 1
    if n == 200:
        print("ready", flush=True)
    time.sleep(0.001)
"""


def test_kill_while_recording_keeps_what_was_said(tmp_path: Path) -> None:
    repo = str(Path(__file__).resolve().parent.parent)
    code = _CHILD.format(repo=repo, data=str(tmp_path))
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    recovered = recover(tmp_path)
    assert [r.call_id for r in recovered] == ["crash-1"]
    rec = recovered[0]
    assert not rec.complete and rec.path.exists()
    pcm = read_pcm(rec.path)
    # At least what was fsynced before "ready" (200 frames, synced every 50) survives, in whole samples.
    assert len(pcm) >= 200 * FRAME_BYTES and len(pcm) % 2 == 0
    assert recover(tmp_path) == []  # idempotent
