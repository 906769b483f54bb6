"""With `redis.min_replicas_ack`, the API acknowledges a write only once a replica holds it: against a primary
with a replica the ticket is created (and is on the replica), against one whose replica is gone the client gets a
clear 503 to retry, never a 201 for a write a failover could lose."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from atiende.runtime import Runtime
from config.loader import Loaded
from core.clock import FixedClock
from core.store import Store
from tests.conftest import ADMIN_KEY
from tests.redis_ha import RedisHA, redis_server_exe

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.mark.skipif(redis_server_exe() is None, reason="redis-server is not installed")
async def test_writes_are_acknowledged_only_once_a_replica_holds_them(loaded: Loaded, clock: FixedClock,
                                                                      tmp_path: Path) -> None:
    from desk_api.app import create_app

    ha = RedisHA(tmp_path / "ha", replicas=1, sentinels=0)
    ha.start()
    try:
        primary = ha.data_ports[0]  # the first is the primary (no Sentinel here to ask)
        # 2 s, not the 300 ms a node would use: under a full test run on two cores a replica's ACK has taken longer
        # (a fresh-clone run got "0 of 1 replicas confirmed the write within 300 ms" for a healthy replica).
        store = Store(ha.url(primary), prefix="dw", min_replicas_ack=1, wait_timeout_ms=2000)
        try:
            rt = Runtime(loaded, store=store, clock=clock)
            await rt.desk.auth.create_api_key("test-admin", ["admin"], key=ADMIN_KEY)
            app = create_app(rt)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                         headers={"X-API-Key": ADMIN_KEY}) as http:
                body = {"channel": "phone", "queue": "N1", "subject": "prueba", "body": "hola"}
                r0 = await http.post("/api/v1/tickets", json=body)
                assert r0.status_code == 201, r0.text
                replica = next(p for p in ha.data_ports if p != primary)
                with ha.client(replica) as replica_client:
                    assert replica_client.exists(f"dw:ticket:{r0.json()['ref']}")
                ha.kill(replica)
                await asyncio.sleep(0.2)
                r = await http.post("/api/v1/tickets", json=body)
                assert r.status_code == 503 and r.json()["error_id"] == "store-not-durable", r.text
                # reads are not held back by a missing replica
                assert (await http.get(f"/api/v1/tickets/{r0.json()['ref']}")).status_code == 200
        finally:
            # a failed assertion must not leave the store's connections to be collected after this test's loop
            # has closed (their "loop is closed" ResourceWarning then failed whichever test ran next)
            await store.close()
    finally:
        ha.stop()
