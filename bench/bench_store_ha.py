#!/usr/bin/env python3
"""What `redis.min_replicas_ack` (WAIT on acknowledged writes) costs: ticket-like writes through the Store against a
real primary + replica on loopback (deploy/redis/ settings: AOF, `appendfsync always`), with and without
`Store.durable()` after each write, at a few concurrencies. Optionally (--failover) the error window of a primary
SIGKILL with three Sentinels, as tests/test_store_ha.py measures it.

    .venv/bin/python bench/bench_store_ha.py [--seconds 5] [--concurrency 1,8,32] [--fsync always] [--failover]

Prints per mode and concurrency: acknowledged writes/s, p50/p95/p99/max latency of one write (ms).
A "write" is what creating a ticket writes in one MULTI: the ticket JSON (~700 bytes), three index zsets, the
sequence counter and a desk event (XADD), then, with WAIT, the durability barrier.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchstats import summary  # noqa: E402

from core.store import REDIS_ERRORS, NotDurable, Store  # noqa: E402
from tests.redis_ha import RedisHA  # noqa: E402

BODY = "x" * 600
MAX_WRITES = 200_000  # per run, whatever --seconds says


async def ticket_write(store: Store, n: int, durable: bool) -> None:
    ref = f"B{n:07d}"
    now = time.time()
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.incr(store.keys.ticket_seq)
        pipe.set(store.keys.ticket(ref), f'{{"ref":"{ref}","subject":"bench","body":"{BODY}","at":{now}}}')
        pipe.zadd(store.keys.tickets_all, {ref: now})
        pipe.zadd(store.keys.tickets_open, {ref: now + 86400})
        pipe.zadd(store.keys.tickets_queue("general"), {ref: now})
        pipe.xadd(store.keys.events, {"kind": "ticket.created", "ref": ref}, maxlen=10_000, approximate=True)
        await pipe.execute()
    if durable:
        await store.durable()


async def run(url: str, password: str, *, durable: bool, concurrency: int, seconds: float) -> dict[str, float]:
    store = Store(url, prefix="bench", password=password, max_connections=concurrency + 4,
                  min_replicas_ack=1 if durable else 0, wait_timeout_ms=1000)
    lat: list[float] = []
    counter = iter(range(MAX_WRITES))
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        for n in counter:
            if time.monotonic() > deadline:
                return
            t = time.perf_counter()
            await ticket_write(store, n, durable)
            lat.append(time.perf_counter() - t)

    try:
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.monotonic() - t0
        await store.redis.flushdb()
    finally:
        await store.close()
    s = summary([x * 1000 for x in lat])
    return {"writes_s": len(lat) / took, "p50_ms": s["p50"], "p95_ms": s["p95"], "p99_ms": s["p99"],
            "max_ms": s["max"], "n": len(lat)}


async def failover(root: Path, down_after_ms: int) -> None:
    ha = RedisHA(root / "fo", replicas=2, sentinels=3, down_after_ms=down_after_ms, failover_timeout_ms=3000)
    await asyncio.to_thread(ha.start)
    store = Store("", prefix="fo", password=ha.password, sentinels=ha.sentinels, sentinel_service=ha.service,
                  min_replicas_ack=1, wait_timeout_ms=1000)
    acked: list[str] = []
    errors: list[float] = []
    resumed: list[float] = []
    killed: list[float] = []
    t0 = time.monotonic()

    async def writer(w: int) -> None:
        i = 0
        while time.monotonic() - t0 < 30 and i < 20_000 and len(resumed) < 500:
            i += 1
            try:
                await ticket_write(store, w * 100_000 + i, True)
            except (*REDIS_ERRORS, NotDurable):
                errors.append(time.monotonic())
                await asyncio.sleep(0.05)
                continue
            acked.append(f"B{w * 100_000 + i:07d}")
            if killed and errors:
                resumed.append(time.monotonic())

    async def chaos() -> None:
        await asyncio.sleep(1.0)
        killed.append(time.monotonic())
        await asyncio.to_thread(ha.kill, ha.data_ports[0])

    try:
        await asyncio.gather(chaos(), *(writer(w) for w in range(8)))
        scores = await store.redis.zmscore(store.keys.tickets_all, acked)
        lost = sum(1 for s in scores if s is None)
        print(f"failover: {len(acked)} acknowledged, {lost} lost, {len(errors)} failed attempts; "
              f"error window {max(errors) - min(errors):.2f} s, writes acknowledged again "
              f"{min(resumed) - killed[0]:.2f} s after the SIGKILL" if errors and resumed else
              f"failover: {len(acked)} acknowledged, {lost} lost, no error seen")
    finally:
        await store.close()
        await asyncio.to_thread(ha.stop)


async def wait_cost(root: Path, fsync: str, seconds: float, concurrency: str) -> None:
    ha = RedisHA(root / "pair", replicas=1, sentinels=0, appendfsync=fsync)
    await asyncio.to_thread(ha.start)
    try:
        url = f"redis://127.0.0.1:{ha.data_ports[0]}/0"
        print(f"primary + 1 replica on loopback, appendfsync {fsync}, {seconds:.0f} s per run")
        print(f"{'mode':<22}{'conc':>5}{'writes/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for conc in (int(c) for c in concurrency.split(",")):
            for durable in (False, True):
                r = await run(url, ha.password, durable=durable, concurrency=conc, seconds=seconds)
                mode = "WAIT 1 (durable)" if durable else "no WAIT"
                print(f"{mode:<22}{conc:>5}{r['writes_s']:>10.0f}{r['p50_ms']:>9.2f}{r['p95_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['max_ms']:>9.2f}")
    finally:
        await asyncio.to_thread(ha.stop)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--fsync", default="always", choices=["always", "everysec"])
    ap.add_argument("--failover", action="store_true", help="also measure a primary SIGKILL with Sentinels")
    ap.add_argument("--down-after-ms", type=int, default=1000, help="Sentinels' down-after-milliseconds (deploy: 5000)")
    ap.add_argument("--skip-wait-cost", action="store_true", help="only the failover")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_wait_cost:
            await wait_cost(Path(tmp), args.fsync, args.seconds, args.concurrency)
        if args.failover:
            print(f"Sentinels: down-after-milliseconds {args.down_after_ms}")
            await failover(Path(tmp), args.down_after_ms)


if __name__ == "__main__":
    asyncio.run(main())
