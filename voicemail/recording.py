"""Durable voicemail recordings.

A message is written to `<call_id>.wav.part` while it is being recorded, with the PCM
fsynced about once a second, so a crash loses at most that second. Finishing patches the
WAV header, fsyncs, renames to `<call_id>.wav` and fsyncs the directory. `recover()` turns
`.part` files left by a crash into valid (shorter) WAV files that are marked incomplete.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.audio import RATE, SAMPLE_BYTES
from core.ids import contact_id
from ivr.conference import RECORDING_PREFIX

HEADER_BYTES = 44
SYNC_EVERY_FRAMES = 50
def file_id(call_id: str) -> str:
    """The id a voicemail is filed and stored under for a call: its contact id (core/ids.py), never one shaped
    like an agent-call recording's id, whose files share this directory."""
    cid = contact_id(call_id)
    if cid.startswith(RECORDING_PREFIX):
        return "vm-" + hashlib.sha256(cid.encode()).hexdigest()[:32]
    return cid


def wav_header(data_bytes: int, rate: int = RATE) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * SAMPLE_BYTES, SAMPLE_BYTES, 16,
        b"data", data_bytes,
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Recording:
    call_id: str
    path: Path
    duration_s: float
    sha256: str
    complete: bool


def voicemail_dir(data_dir: Path) -> Path:
    return data_dir / "voicemail"


class VoicemailWriter:
    """Appends 20 ms frames to a durable WAV file. Not thread-safe; one writer per call."""

    def __init__(self, data_dir: Path, call_id: str) -> None:
        self.dir = voicemail_dir(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.call_id = call_id = file_id(call_id)
        self.final_path = self.dir / f"{call_id}.wav"
        self.part_path = self.dir / f"{call_id}.wav.part"
        self._fh = self.part_path.open("wb")
        self._fh.write(wav_header(0))
        self._data = 0
        self._since_sync = 0
        self._fh.flush()
        os.fsync(self._fh.fileno())
        _fsync_dir(self.dir)

    @property
    def duration_s(self) -> float:
        return self._data / (RATE * SAMPLE_BYTES)

    def write(self, frame: bytes, *, fsync: bool = True) -> bool:
        """Append a frame; about once a second flush it to the kernel and return True (a durability point).

        With `fsync=False` the caller runs `fsync()` itself, e.g. in a thread: on the event loop that paces a
        call's RTP, an fsync that stalls (hundreds of ms were seen on this disk) would stall the audio."""
        if len(frame) % SAMPLE_BYTES:
            frame = frame[: len(frame) - len(frame) % SAMPLE_BYTES]
        self._fh.write(frame)
        self._data += len(frame)
        self._since_sync += 1
        if self._since_sync < SYNC_EVERY_FRAMES:
            return False
        self._since_sync = 0
        self._fh.flush()
        if fsync:
            self.fsync()
        return True

    def fsync(self) -> None:
        os.fsync(self._fh.fileno())

    def sync(self) -> None:
        self._fh.flush()
        self.fsync()
        self._since_sync = 0

    def finish(self) -> Recording:
        self._fh.seek(0)
        self._fh.write(wav_header(self._data))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.part_path, self.final_path)
        _fsync_dir(self.dir)
        return Recording(self.call_id, self.final_path, self.duration_s, sha256_of(self.final_path), complete=True)

    def abort(self) -> None:
        """Close without finishing: the .part stays for recover() (used when the call dies mid-message)."""
        if not self._fh.closed:
            self.sync()
            self._fh.close()


def finalize_part(part: Path) -> Recording:
    """Make a valid WAV from a `.part` left by a crash: keep whole samples, fix the header."""
    size = part.stat().st_size
    data = max(0, size - HEADER_BYTES)
    data -= data % SAMPLE_BYTES
    with part.open("r+b") as fh:
        fh.truncate(HEADER_BYTES + data)
        fh.seek(0)
        fh.write(wav_header(data))
        fh.flush()
        os.fsync(fh.fileno())
    final = part.with_name(part.name.removesuffix(".part"))
    os.replace(part, final)
    _fsync_dir(part.parent)
    call_id = final.name.removesuffix(".wav")
    return Recording(call_id, final, data / (RATE * SAMPLE_BYTES), sha256_of(final), complete=False)


def recover(data_dir: Path) -> list[Recording]:
    """The voicemails a crash cut; agent-call recordings cut with them are `call_recordings.recover`'s (filed as
    a voicemail, a private conversation would become a ticket in the voicemail queue)."""
    return [finalize_part(p) for p in parts(data_dir) if not p.name.startswith(RECORDING_PREFIX)]


def parts(data_dir: Path) -> list[Path]:
    d = voicemail_dir(data_dir)
    return sorted(d.glob("*.wav.part")) if d.is_dir() else []


def read_pcm(path: Path) -> bytes:
    """PCM samples of a recording (our own 8 kHz mono 16-bit WAV files)."""
    import wave

    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != SAMPLE_BYTES:
            raise ValueError(f"{path} is not 8 kHz mono 16-bit")
        return w.readframes(w.getnframes())


# A message recorded while the store was away waits as `<call_id>.wav` plus this sidecar (who called, the
# queue, the transcript); `VoicemailService.file_pending` turns it into its ticket when the store is back.
PENDING_SUFFIX = ".pending.json"


def write_pending(data_dir: Path, rec: Recording, meta: Mapping[str, object]) -> Path:
    directory = voicemail_dir(data_dir)
    path = directory / f"{rec.call_id}{PENDING_SUFFIX}"
    tmp = path.with_name(path.name + ".tmp")
    doc = {**meta, "call_id": rec.call_id, "path": str(rec.path), "sha256": rec.sha256,
           "duration_s": rec.duration_s, "complete": rec.complete}
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(doc, fh, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    _fsync_dir(directory)
    return path


def pending(data_dir: Path) -> list[tuple[Path, dict[str, object]]]:
    """Sidecars of messages waiting to be filed, oldest first; unreadable ones are skipped (and logged by the
    caller when it tries them), never deleted."""
    directory = voicemail_dir(data_dir)
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.glob(f"*{PENDING_SUFFIX}"), key=lambda p: p.stat().st_mtime):
        try:
            out.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return out
