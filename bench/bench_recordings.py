#!/usr/bin/env python3
"""Where finished voicemail recordings go so every node plays them: Redis (A-law, base64) vs a shared directory
vs the recording node's disk. One command; a private redis-server with AOF and `appendfsync always` (the
service's setting), the shared directory on this machine's disk (an NFS mount adds its network round trips).

    .venv/bin/python bench/bench_recordings.py [--messages 40] [--seconds 60]

Prints, per store: put (copy after the message ends) and get (the API serving it) p50/p95/p99/max, bytes kept per
minute of audio, and Redis memory growth.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchstats import summary  # noqa: E402

from core.redis_server import PrivateRedis  # noqa: E402
from core.store import Store  # noqa: E402
from voicemail.recording import VoicemailWriter  # noqa: E402
from voicemail.storage import LocalRecordings, RecordingStore, RedisRecordings, SharedDirRecordings  # noqa: E402


def message(data_dir: Path, call_id: str, seconds: float) -> Path:
    w = VoicemailWriter(data_dir, call_id)
    for f in range(int(seconds * 50)):  # a voice-like sweep, not silence (A-law of silence compresses nothing)
        w.write(struct.pack("<160h", *(int(6000 * math.sin(2 * math.pi * (200 + f % 300) * (f * 160 + i) / 8000))
                                       for i in range(160))))
    return Path(w.finish().path)


async def measure(name: str, store: RecordingStore, wavs: list[Path], redis: Store) -> None:
    before = int((await redis.redis.info("memory"))["used_memory"])
    puts, gets = [], []
    for wav in wavs:
        t0 = time.perf_counter()
        await store.put(wav.stem, wav)
        puts.append((time.perf_counter() - t0) * 1000)
    size = 0
    for wav in wavs:
        t0 = time.perf_counter()
        got = await store.get(wav.stem)
        gets.append((time.perf_counter() - t0) * 1000)
        assert got is not None and len(got) == wav.stat().st_size, name
        size = len(got)
    grown = int((await redis.redis.info("memory"))["used_memory"]) - before
    put, get = summary(puts), summary(gets)
    print(f"{name:11} put ms p50 {put['p50']:6.1f} p95 {put['p95']:6.1f} p99 {put['p99']:6.1f} max {put['max']:6.1f} | "
          f"get ms p50 {get['p50']:6.1f} p95 {get['p95']:6.1f} p99 {get['p99']:6.1f} max {get['max']:6.1f} | "
          f"redis +{grown / len(wavs) / 1024:7.1f} KiB per message (WAV {size / 1024:.0f} KiB)")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = PrivateRedis(root / "redis")
        server.start()
        store = Store(server.url, prefix="bench")
        try:
            data = root / "node"
            wavs = [message(data, f"call-{i}", args.seconds) for i in range(args.messages)]
            print(f"{args.messages} messages of {args.seconds:.0f} s; load average {os.getloadavg()[0]:.2f} "
                  f"on {os.cpu_count()} CPUs")
            local = LocalRecordings(data)
            await measure("local", local, wavs, store)
            await measure("redis", RedisRecordings(store, 90, local), wavs, store)
            shared = SharedDirRecordings(root / "shared", store, "bench")
            await shared.check()
            await measure("shared_dir", shared, wavs, store)
        finally:
            await store.close()
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
