"""Web chat sockets and the Redis connection budget over real HTTP (uvicorn on loopback, its own redis-server):
pushes reach every socket through the process's one pub/sub reader (issue 16 finding 3), they survive a Redis
restart, and a request that finds every connection of the budget busy gets a clear 503 while the loop goes on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from config.loader import Loaded
from core.redis_server import PrivateRedis
from desk_api.channels import webchat
from tests.test_live_events import BUDGET, make_runtime, node_connections, own_redis, serving  # noqa: F401

pytestmark = pytest.mark.anyio
SOCKETS = 40


def _open_chat(rt: Any) -> None:
    cfg = rt.settings.channels.webchat
    for field, value in (("max_sockets_per_address", 1000), ("connect_limit", 1000)):
        if hasattr(cfg, field):  # the per-address limits of the chat: all sockets here come from 127.0.0.1
            setattr(cfg, field, value)


async def frame_of(ws: ClientConnection, want: str, within: float = 10.0) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), within))
        if frame.get("type") == "message" and frame.get("text") == want:
            return dict(frame)


async def test_chat_sockets_share_one_subscription_and_survive_a_redis_restart(
        own_redis: PrivateRedis, loaded: Loaded, tmp_path: Path) -> None:  # noqa: F811
    rt = make_runtime(loaded, own_redis.url, tmp_path)
    _open_chat(rt)
    other = make_runtime(loaded, own_redis.url, tmp_path / "other")  # another node's view: pushes from there
    async with serving(rt) as url:
        ws_url = url.replace("http", "ws") + "/api/v1/channels/webchat/ws"
        sockets: list[ClientConnection] = []
        sessions: list[str] = []
        try:
            for _ in range(SOCKETS):
                ws = await connect(ws_url)
                sockets.append(ws)
                await ws.send(json.dumps({"type": "resume"}))  # a new conversation: the page's first frame
                sessions.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["session"])
            used = node_connections(own_redis.url) - 1  # minus the other node's pool (one connection so far)
            assert used <= BUDGET, f"{used} Redis connections for {SOCKETS} chat sockets"
            await webchat.push(other, sessions[7], {"from": "agent", "text": "Hola, le atiende Ana"})
            assert (await frame_of(sockets[7], "Hola, le atiende Ana"))["from"] == "agent"

            own_redis.stop()
            await asyncio.sleep(1.0)
            own_redis.start()
            for _ in range(100):  # the other node's pool reconnects by itself; wait until it can write
                try:
                    await webchat.push(other, sessions[3], {"from": "agent", "text": "¿Sigue ahí?"})
                    break
                except (ConnectionError, OSError, aioredis.ConnectionError):
                    await asyncio.sleep(0.1)
            assert (await frame_of(sockets[3], "¿Sigue ahí?", within=20))["from"] == "agent"
        finally:
            for ws in sockets:
                await ws.close()
            await other.store.close()


async def test_a_request_that_finds_the_budget_busy_gets_503_and_the_loop_goes_on(
        own_redis: PrivateRedis, loaded: Loaded, tmp_path: Path) -> None:  # noqa: F811
    rt = make_runtime(loaded, own_redis.url, tmp_path, budget=4, pool_timeout=0.3)  # 2 for requests, 2 for the readers
    small = rt.store
    key = await rt.desk.auth.create_api_key("ops", ["admin"])
    async with serving(rt) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        # Two slow commands hold both request connections (BLPOP on a list nobody fills).
        async def hold(i: int) -> None:
            await small.redis.blpop([f"nothing:{i}"], timeout=3)

        holders = [asyncio.create_task(hold(i)) for i in range(2)]
        await asyncio.sleep(0.3)
        assert small.pool_stats()["pool_in_use"] == 2
        r = await c.get("/api/v1/tickets", headers={"X-API-Key": key})
        assert r.status_code == 503 and r.json()["error_id"] == "store-busy", r.text
        assert r.headers["retry-after"] == "1"
        assert (await c.get("/livez")).status_code == 200  # the loop answers meanwhile
        metrics = (await c.get("/metrics")).text
        assert "atiende_redis_pool_exhausted_total" in metrics and 'atiende_redis_connections{state="pool_max"} 2.0' in metrics
        await asyncio.gather(*holders)
        r = await c.get("/api/v1/tickets", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
