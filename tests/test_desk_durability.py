"""Nothing lost: Redis is killed (SIGKILL) during a burst of ticket creations and restarted; every creation that
returned 201 is there afterwards. The private Redis runs with AOF and `appendfsync always`, so a reply means the
write is on disk."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from atiende.runtime import Runtime
from config.loader import Loaded
from core.redis_server import PrivateRedis
from core.store import Store

pytestmark = pytest.mark.anyio

KEY = {"X-API-Key": "durability-key-0123456789"}


async def test_kill_redis_during_burst_loses_no_acknowledged_ticket(loaded: Loaded, clock: object, tmp_path: Path) -> None:
    from desk_api.app import create_app

    server = PrivateRedis(tmp_path / "redis")
    server.start()
    store = Store(server.url, prefix="dur")
    rt = Runtime(loaded, store=store, clock=clock)  # type: ignore[arg-type]
    await rt.desk.auth.create_api_key("ivr", ["supervisor"], key=KEY["X-API-Key"])
    app = create_app(rt)
    acked: list[str] = []
    statuses: Counter[int] = Counter()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=10) as client:
            t0 = time.monotonic()

            async def creator(n: int) -> None:
                i = 0
                while time.monotonic() - t0 < 4.5 and i < 2000:  # bounded in time and count
                    i += 1
                    try:
                        r = await client.post("/api/v1/tickets", headers=KEY,
                                              json={"channel": "phone", "subject": f"burst {n}-{i}", "body": "x"})
                    except Exception as exc:  # the app must answer (503), never crash the request
                        raise AssertionError(f"request failed without an answer: {exc!r}") from exc
                    statuses[r.status_code] += 1
                    if r.status_code == 201:
                        acked.append(r.json()["ref"])
                    elif r.status_code == 503:
                        await asyncio.sleep(0.05)

            async def chaos() -> None:
                await asyncio.sleep(0.8)
                assert server.proc is not None
                server.proc.kill()  # SIGKILL: no shutdown, no final flush
                await asyncio.to_thread(server.proc.wait)
                await asyncio.sleep(2.0)  # longer than the store's own retries, so some requests do fail
                await asyncio.to_thread(server.start)  # same port, same directory: it replays the AOF

            await asyncio.gather(chaos(), *(creator(n) for n in range(16)))
            print(f"burst: {dict(statuses)}, acknowledged {len(acked)}")
            assert set(statuses) <= {201, 503}, statuses
            assert statuses[201] > 20, statuses  # real load (503s show the outage as clients saw it; retries may hide it)
            # after the restart, creations work again and every acknowledged ticket is there
            r = await client.post("/api/v1/tickets", headers=KEY, json={"channel": "phone", "subject": "after"})
            assert r.status_code == 201
        raws = await store.redis.mget([store.keys.ticket(ref) for ref in acked])
        missing = [ref for ref, raw in zip(acked, raws, strict=True) if raw is None]
        assert missing == [], f"{len(missing)} of {len(acked)} acknowledged tickets lost"
        indexed = set(await store.redis.zrange(store.keys.tickets_all, 0, -1))
        assert set(acked) <= indexed
    finally:
        await store.close()
        server.stop()
