"""Durable voicemail files: complete messages, and what a crash leaves behind."""

from __future__ import annotations

import math
import os
import signal
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from core.audio import FRAME_BYTES
from voicemail.recording import VoicemailWriter, read_pcm, recover


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


def test_bad_call_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        VoicemailWriter(tmp_path, "../etc/passwd")


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
