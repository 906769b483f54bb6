"""`atiende run` with desk streams open: SIGINT ends the streams (the browsers resume elsewhere with Last-Event-ID)
and the service exits at once, instead of the HTTP server waiting for streams that never end by themselves."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core.redis_server import PrivateRedis, free_port
from core.store import Store
from desk.auth import SESSION_COOKIE
from tests.test_live_events import own_redis  # noqa: F401

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parent.parent


def _start(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "atiende.cli", "run", "--no-sip", "--http", f"127.0.0.1:{port}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_sigint_ends_open_streams_and_the_service_exits(own_redis: PrivateRedis, tmp_path: Path) -> None:  # noqa: F811
    from config.loader import load
    from core.clock import SystemClock
    from desk import Desk

    settings = load(None, env={}).settings
    store = Store(own_redis.url)
    await Desk(lambda: settings, store, SystemClock()).auth.create_user("eva", "Eva", ["supervisor"], "eva-pass-2026")
    await store.close()
    port = free_port()
    env = {**os.environ, "ATIENDE_REDIS_URL": own_redis.url, "ATIENDE_SERVICE__DATA_DIR": str(tmp_path / "var")}
    svc = _start(port, env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for _ in range(300):
                try:
                    if (await c.get("/livez")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            r = await c.post("/api/v1/auth/login", json={"username": "eva", "password": "eva-pass-2026"})
            token = r.json()["token"]
            async with c.stream("GET", "/desk/api/events", headers={"Cookie": f"{SESSION_COOKIE}={token}"}) as s:
                lines = s.aiter_lines()
                while (await asyncio.wait_for(anext(lines), 10)) != ": connected":
                    pass
                started = time.monotonic()
                svc.send_signal(signal.SIGINT)
                rest = [line async for line in lines]  # the stream ends: the server closed it
                assert time.monotonic() - started < 5, rest
        for _ in range(100):
            if svc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert svc.poll() == 0
    finally:
        if svc.poll() is None:
            svc.kill()
        svc.wait()
