"""A failover between a request's writes and its WAIT (issue 15): the WAIT then runs on the new primary, whose
replicas confirm its own stream, not the writes lost with the old one. `Store.durable(since=...)` refuses when the
primary's replication id changed, and the API's durable-writes middleware answers 503 instead of 2xx.

Real parts: a primary, two replicas and three Sentinels (tests/redis_ha.py); the write is lost for real (the
replicas are cut off before it, the Sentinels promote one of them)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from config.service import RedisConfig
from core.store import NotDurable, Store
from tests.redis_ha import RedisHA, redis_server_exe

pytestmark = [pytest.mark.anyio, pytest.mark.e2e,
              pytest.mark.skipif(redis_server_exe() is None, reason="redis-server is not installed")]


def _store(ha: RedisHA, prefix: str) -> Store:
    cfg = RedisConfig.model_validate({"sentinels": [f"{h}:{p}" for h, p in ha.sentinels], "prefix": prefix,
                                      "sentinel_service": ha.service, "password": ha.password,
                                      # generous: a healthy replica under a loaded test run must not look absent
                                      # (these tests expect refusals for a changed primary, never for a timeout)
                                      "min_replicas_ack": 1, "wait_timeout_ms": 3000})
    return Store.from_config(cfg)


def _cut_replicas(ha: RedisHA, primary: int) -> None:
    """From now on the replicas get nothing from the primary: a wrong primary password, then their links dropped."""
    for port in ha.data_ports:
        if port != primary:
            with ha.client(port) as c:
                c.config_set("masterauth", "not-the-password")
                c.client_kill_filter(_type="master")


def _heal_replicas(ha: RedisHA) -> None:
    for port in ha.data_ports:
        with ha.client(port) as c:
            c.config_set("masterauth", ha.password)


async def _fail_over(ha: RedisHA, old: int) -> int:
    """A Sentinel-driven failover (as after a primary's crash, without waiting for the down-after period); returns the
    new primary once the old one serves as its replica."""
    port = ha.sentinel_ports[0]

    def run() -> int:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=5) as s:
            s.execute_command("SENTINEL", "FAILOVER", ha.service)
        for _ in range(300):  # bounded: 30 s
            new = ha.primary_port()
            if new is not None and new != old:
                with ha.client(old) as c:
                    info = c.info("replication")
                if info.get("role") == "slave" and info.get("master_port") == new \
                        and info.get("master_link_status") == "up":
                    return new
            time.sleep(0.1)
        raise AssertionError("the Sentinels did not complete the failover")

    return await asyncio.to_thread(run)


async def test_durable_refuses_writes_of_a_primary_replaced_since(ha: RedisHA) -> None:
    store = _store(ha, "since")
    old = ha.data_ports[0]
    try:
        since = await store.primary()
        await store.redis.set("since:kept", "1")
        await store.durable(since)  # the replicas hold it
        since = await store.primary()
        _cut_replicas(ha, old)
        await store.redis.set("since:lost", "1")  # taken by the old primary only
        _heal_replicas(ha)  # the replicas may reach a primary again, but the Sentinels promote one first
        await _fail_over(ha, old)
        with pytest.raises(NotDurable, match="primary changed"):
            await store.durable(since)
        # What the refusal protects: the write is gone with the old primary's history, the earlier one survived.
        assert await store.redis.get("since:lost") is None
        assert await store.redis.get("since:kept") == "1"
        # The store now knows the new primary: the next request's writes are confirmed as usual.
        since = await store.primary()
        await store.redis.set("since:after", "1")
        await store.durable(since)
    finally:
        await store.close()


async def test_the_api_answers_503_when_the_primary_changed_during_the_request(ha: RedisHA) -> None:
    from desk_api.app import _DurableWrites

    store = _store(ha, "mw")
    old = ha.data_ports[0]
    sent: list[dict[str, Any]] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        # What a ticket creation does, with the failover landing between its write and its acknowledgement.
        await store.redis.set(f"mw:{scope['path']}", "1")
        if scope["path"] == "/failover":
            _cut_replicas(ha, old)
            await store.redis.set("mw:lost", "1")
            _heal_replicas(ha)
            await _fail_over(ha, old)
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"created"})

    app = _DurableWrites(handler, SimpleNamespace(store=store))  # type: ignore[arg-type]

    async def call(path: str) -> int:
        sent.clear()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)
        return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))

    try:
        assert await call("/before") == 201
        assert await call("/failover") == 503
        assert b"store-not-durable" in b"".join(m.get("body", b"") for m in sent)
        assert await store.redis.get("mw:lost") is None  # what a 201 would have acknowledged
        assert await call("/after") == 201
    finally:
        await store.close()
