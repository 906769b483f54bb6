"""Where finished recordings live so that every node can play them and none is lost with a node's disk.

A message is always written to the recording node's disk first (`recording.VoicemailWriter`: fsynced each
second, recovered after a crash); once it is finished it is copied to the shared store, from which the API
of any node serves it. Two shared stores, chosen by `voicemail.storage` (measured in bench/bench_recordings.py):

- `redis` (default): the audio as G.711 A-law (8 KB per second, base64: 10.7 KB/s, 2/3 of the WAV) in the same Redis that holds
  the ticket, replicated and failed over with it by Sentinel; kept `voicemail.audio_retention_days`. No other
  service to run, and what the API acknowledges is on the replicas too.
- `shared_dir`: a directory every node mounts (NFS, CephFS...), given in `voicemail.shared_dir`. At start-up a
  node writes a marker there and checks that the marker other nodes wrote is visible, so a node whose mount is
  missing (a local empty directory) refuses to start instead of scattering recordings.
- `local`: the recording node's disk only (a single node; other nodes answer 404 for its messages).
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
import warnings
from pathlib import Path
from typing import Protocol

from core.audio import RATE, SAMPLE_BYTES
from core.errors import Unavailable
from core.store import Store
from voicemail.recording import read_pcm, voicemail_dir, wav_header

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 (removed in 3.13, where audioop-lts provides it).
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

MARKER = ".atiende-shared"


class RecordingStore(Protocol):
    async def put(self, call_id: str, wav: Path) -> None:
        """Copy a finished recording (a WAV on this node's disk) to where every node reads it."""
        ...

    async def get(self, call_id: str) -> bytes | None:
        """The recording as a WAV file's bytes; None when there is none."""
        ...


def _wav(pcm: bytes) -> bytes:
    return wav_header(len(pcm)) + pcm


class LocalRecordings:
    def __init__(self, data_dir: Path) -> None:
        self.dir = voicemail_dir(data_dir)

    async def put(self, call_id: str, wav: Path) -> None:
        return None  # it is already here

    async def get(self, call_id: str) -> bytes | None:
        path = self.dir / f"{Path(call_id).name}.wav"
        return await asyncio.to_thread(path.read_bytes) if await asyncio.to_thread(path.is_file) else None


class RedisRecordings:
    def __init__(self, store: Store, retention_days: int, local: LocalRecordings) -> None:
        self.store = store
        self.ttl_s = retention_days * 86_400
        self.local = local

    async def put(self, call_id: str, wav: Path) -> None:
        pcm = await asyncio.to_thread(read_pcm, wav)
        alaw = await asyncio.to_thread(audioop.lin2alaw, pcm, SAMPLE_BYTES)
        # base64: the store's client speaks text (a third more than the A-law bytes, still 2/3 of the WAV)
        await self.store.redis.set(self.store.keys.voicemail_audio(call_id), base64.b64encode(alaw).decode(),
                                   ex=self.ttl_s)

    async def get(self, call_id: str) -> bytes | None:
        raw = await self.store.redis.get(self.store.keys.voicemail_audio(call_id))
        if raw is None:
            return await self.local.get(call_id)  # recorded here and not copied yet (the store was away)
        pcm = await asyncio.to_thread(audioop.alaw2lin, base64.b64decode(raw), SAMPLE_BYTES)
        return _wav(pcm)


class SharedDirRecordings:
    def __init__(self, directory: Path, store: Store, node_id: str) -> None:
        self.dir = directory
        self.store = store
        self.node_id = node_id

    async def check(self) -> None:
        """Refuse a directory that is not the one the other nodes share (a missing mount looks like an empty dir)."""
        def write_marker() -> str:
            self.dir.mkdir(parents=True, exist_ok=True)
            token = uuid.uuid4().hex
            marker = self.dir / f"{MARKER}-{self.node_id}"
            marker.write_text(token)
            return token

        token = await asyncio.to_thread(write_marker)
        r, key = self.store.redis, self.store.keys.shared_dir_markers
        others = await r.hgetall(key)
        await r.hset(key, self.node_id, token)
        missing: list[str] = []

        def marker_of(node: str) -> str | None:
            path = self.dir / f"{MARKER}-{node}"
            return path.read_text() if path.is_file() else None

        for raw_node, raw_expected in others.items():
            node, expected = str(raw_node), str(raw_expected)
            if node != self.node_id and await asyncio.to_thread(marker_of, node) != expected:
                missing.append(node)
        if missing:
            raise Unavailable(f"{self.dir} is not the directory nodes {', '.join(missing)} share: is it mounted?",
                              {"dir": str(self.dir), "nodes": missing}, error_id="recordings-not-shared")

    async def put(self, call_id: str, wav: Path) -> None:
        target = self.dir / wav.name

        def copy() -> None:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            with wav.open("rb") as src, tmp.open("wb") as dst:
                while block := src.read(1 << 16):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            tmp.replace(target)

        await asyncio.to_thread(copy)

    async def get(self, call_id: str) -> bytes | None:
        path = self.dir / f"{Path(call_id).name}.wav"
        return await asyncio.to_thread(path.read_bytes) if await asyncio.to_thread(path.is_file) else None


def seconds_of(wav: bytes) -> float:
    return max(0, len(wav) - 44) / (RATE * SAMPLE_BYTES)
