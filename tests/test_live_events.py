"""Live desk events (desk_api/live.py) over real HTTP: the real app under uvicorn on a loopback port, its own
redis-server, SSE streams read with httpx or raw sockets.

What must hold (issue 22, issue 16 finding 9): many streams share one reader and a bounded Redis connection
budget; an agent sees only their queues' events and their own; a client that stops reading is cut and resumes
with Last-Event-ID without losing an event; the reader survives a Redis restart; per-user limits give the page
a Spanish message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from atiende.runtime import Runtime
from config.loader import Loaded
from core.clock import FixedClock
from core.redis_server import PrivateRedis, free_port
from core.store import DEDICATED, Store
from desk.auth import SESSION_COOKIE
from desk.events import EventView, visible
from desk_api import metrics
from tests.conftest import MADRID

pytestmark = pytest.mark.anyio

BUDGET = 12


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", port=free_port())
    server.start()
    yield server
    server.stop()


def make_runtime(loaded: Loaded, url: str, tmp_path: Path, *, budget: int = BUDGET, pool_timeout: float = 2.0,
                 **desk: Any) -> Runtime:
    from datetime import datetime

    settings = loaded.settings.model_copy(deep=True)
    settings.service.data_dir = tmp_path / "var"
    for k, v in desk.items():
        setattr(settings.desk, k, v)
    store = Store(url, max_connections=budget, pool_timeout=pool_timeout)
    return Runtime(Loaded(settings=settings, version=loaded.version, document=loaded.document), store=store,
                   clock=FixedClock(datetime(2026, 11, 23, 10, 0, tzinfo=MADRID)))


@contextlib.asynccontextmanager
async def serving(rt: Runtime) -> AsyncIterator[str]:
    """The app under uvicorn (lifespan on: the hub starts and stops with it) on a free loopback port."""
    import uvicorn

    from desk_api.app import create_app

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(create_app(rt), log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()
        await rt.store.close()


async def login(url: str, username: str, password: str) -> str:
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])


class Stream:
    """One SSE stream read by a task: the events (id, data) and the named events (`limit`, `resync`)."""

    def __init__(self, client: httpx.AsyncClient, token: str, last_id: str | None = None) -> None:
        self.client, self.token, self.last_id = client, token, last_id
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.named: list[tuple[str, dict[str, Any]]] = []
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        headers = {"Cookie": f"{SESSION_COOKIE}={self.token}"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        try:
            async with self.client.stream("GET", "/desk/api/events", headers=headers) as r:
                assert r.status_code == 200
                sid, name = "", ""
                async for line in r.aiter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("id: "):
                        sid = line[4:]
                    elif line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                        if name:
                            self.named.append((name, data))
                            self.connected.set()
                        else:
                            self.events.append((sid, data))
                    elif line == "":
                        sid, name = "", ""
        finally:
            self.ended.set()

    async def wait_for(self, n: int, within: float = 10.0) -> None:
        for _ in range(int(within / 0.02)):
            if len(self.events) >= n:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.events)} events arrived, {n} expected")

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def node_connections(url: str) -> int:
    """Connections Redis sees, minus this check's own."""
    with redis.Redis.from_url(url) as r:
        return len(r.client_list()) - 1


# ---- the visibility rule, alone -----------------------------------------------------------------------------

def test_the_visibility_rule() -> None:
    n1 = EventView(everything=False, principal="user:ana", agent="ana", queues=frozenset({"N1"}))
    sup = EventView(everything=True, principal="user:sup")
    n2_ticket = {"type": "ticket.created", "queue": "N2", "subject": "Queja", "actor": "user:luis"}
    assert not visible(n1, n2_ticket) and visible(sup, n2_ticket)
    assert visible(n1, {"type": "ticket.updated", "queue": "N1"})
    assert visible(n1, {"type": "ticket.updated", "queue": "N2", "assignee": "ana"})  # assigned to her
    assert visible(n1, {"type": "ticket.escalated", "queue": "N2", "actor": "user:ana"})  # her own action
    assert not visible(n1, {"type": "call.offered", "queue": "N1", "agent": "pepe", "caller": "600111222"})
    assert visible(n1, {"type": "call.offered", "queue": "N1", "agent": "ana"})
    assert not visible(n1, {"type": "agent.presence", "agent": "pepe"})
    assert not visible(n1, {"type": "citizen.merged", "citizen_id": "c1"})  # no queue: supervisors only
    assert not visible(n1, {"type": "something.new", "queue": "N1"})
    nobody = EventView(everything=False, principal="user:x")
    assert not visible(nobody, {"type": "ticket.created", "queue": "N1"})


# ---- over HTTP -------------------------------------------------------------------------------------------------

async def test_an_n1_agent_never_sees_an_n2_ticket_and_a_supervisor_sees_both(
        own_redis: PrivateRedis, loaded: Loaded, tmp_path: Path) -> None:
    rt = make_runtime(loaded, own_redis.url, tmp_path)
    auth = rt.desk.auth
    await auth.create_user("ana", "Ana", ["agent_n1"], "ana-pass-2026", level=1, skills=["general"])
    await auth.create_user("eva", "Eva", ["supervisor"], "eva-pass-2026")
    async with serving(rt) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        ana = Stream(c, await login(url, "ana", "ana-pass-2026"))
        eva = Stream(c, await login(url, "eva", "eva-pass-2026"))
        await asyncio.wait_for(asyncio.gather(ana.connected.wait(), eva.connected.wait()), 5)
        secret = "Queja sobre el trato recibido: texto confidencial N2"
        t2 = await rt.desk.tickets.create(subject=secret, body=secret, queue="N2", kind="complaint", channel="api",
                                          actor="test")
        t1 = await rt.desk.tickets.create(subject="Cita previa", body="Quiero cita", queue="N1", channel="api", actor="test")
        await eva.wait_for(2)
        await ana.wait_for(1)
        await asyncio.sleep(0.3)  # anything else on its way would have arrived
        assert [e["ref"] for _, e in eva.events] == [t2.ref, t1.ref]
        assert [e["ref"] for _, e in ana.events] == [t1.ref]
        assert secret not in json.dumps([e for _, e in ana.events], ensure_ascii=False)
        # Resuming from before both events replays only what she may see.
        again = Stream(c, ana.token, last_id="0-0")
        await again.wait_for(1)
        await asyncio.sleep(0.3)
        assert [e["ref"] for _, e in again.events] == [t1.ref]
        for s in (ana, eva, again):
            await s.close()


async def test_200_streams_share_the_reader_within_the_connection_budget(
        own_redis: PrivateRedis, loaded: Loaded, tmp_path: Path) -> None:
    rt = make_runtime(loaded, own_redis.url, tmp_path, live_streams_per_user=300, live_streams_per_address=300)
    await rt.desk.auth.create_user("eva", "Eva", ["supervisor"], "eva-pass-2026")
    async with serving(rt) as url:
        token = await login(url, "eva", "eva-pass-2026")
        limits = httpx.Limits(max_connections=260, max_keepalive_connections=260)
        async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as c:
            streams = [Stream(c, token) for _ in range(200)]
            await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in streams)), 30)
            # Other requests go on meanwhile, and answer.
            answers = await asyncio.gather(*(c.get("/api/v1/tickets", headers={"Cookie": f"{SESSION_COOKIE}={token}"})
                                             for _ in range(50)))
            assert {a.status_code for a in answers} == {200}
            refs = [(await rt.desk.tickets.create(subject=f"s{i}", body="b", queue="N1", channel="api", actor="test")).ref
                    for i in range(5)]
            await asyncio.gather(*(s.wait_for(5, 20) for s in streams))
            assert all([e["ref"] for _, e in s.events] == refs for s in streams)
            used = node_connections(own_redis.url)
            assert used <= BUDGET, f"{used} Redis connections for 200 streams (budget {BUDGET})"
            stats = rt.store.pool_stats()
            assert stats["dedicated"] <= DEDICATED and stats["pool_open"] <= BUDGET - DEDICATED
            metrics = (await c.get("/metrics")).text
            assert 'atiende_redis_connections{state="budget"} 12.0' in metrics
            assert "atiende_live_streams 200.0" in metrics
            for s in streams:
                await s.close()


async def test_a_slow_client_is_cut_and_resumes_without_losing_events(
        own_redis: PrivateRedis, loaded: Loaded, tmp_path: Path) -> None:
    rt = make_runtime(loaded, own_redis.url, tmp_path, live_buffer_events=10, live_buffer_bytes=65_536)
    await rt.desk.auth.create_user("eva", "Eva", ["supervisor"], "eva-pass-2026")
    async with serving(rt) as url:
        token = await login(url, "eva", "eva-pass-2026")
        host, port = url.removeprefix("http://").split(":")
        # A client that stops reading: a small receive window and nobody reading it.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET /desk/api/events HTTP/1.1\r\nHost: x\r\nCookie: {SESSION_COOKIE}={token}\r\n\r\n".encode())
        await writer.drain()
        for _ in range(200):  # until the server holds the stream
            if metrics.LIVE_STREAMS._value.get() >= 1:
                break
            await asyncio.sleep(0.02)
        ids = [await rt.desk.events.publish({"type": "ticket.updated", "queue": "N1", "n": i, "text": "x" * 20_000})
               for i in range(300)]
        for _ in range(500):
            if metrics.LIVE_CUT.labels("slow")._value.get() > 0:  # the server cut it: the buffer filled
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the slow stream was never cut")
        # Now it reads: what was written before the cut, then the end of the stream.
        raw = await asyncio.wait_for(reader.read(-1), 20)
        writer.close()
        await writer.wait_closed()
        got = [line[4:] for line in raw.decode("utf-8", "replace").split("\n") if line.startswith("id: ")]
        assert got and got == ids[: len(got)] and len(got) < len(ids)
        # It resumes from the last event it saw: the rest arrives, each once, in order.
        async with httpx.AsyncClient(base_url=url, timeout=20) as c:
            rest = Stream(c, token, last_id=got[-1])
            await rest.wait_for(len(ids) - len(got), 20)
            assert got + [sid for sid, _ in rest.events] == ids
            await rest.close()


async def test_the_reader_survives_a_redis_restart(own_redis: PrivateRedis, loaded: Loaded, tmp_path: Path) -> None:
    rt = make_runtime(loaded, own_redis.url, tmp_path)
    await rt.desk.auth.create_user("eva", "Eva", ["supervisor"], "eva-pass-2026")
    async with serving(rt) as url:
        token = await login(url, "eva", "eva-pass-2026")
        async with httpx.AsyncClient(base_url=url, timeout=20) as c:
            s = Stream(c, token)
            await asyncio.wait_for(s.connected.wait(), 5)
            first = await rt.desk.events.publish({"type": "ticket.updated", "queue": "N1", "n": 1})
            await s.wait_for(1)
            own_redis.stop()
            await asyncio.sleep(1.0)
            own_redis.start()
            second = await rt.desk.events.publish({"type": "ticket.updated", "queue": "N1", "n": 2})
            await s.wait_for(2, 15)
            assert [sid for sid, _ in s.events] == [first, second]
            await s.close()


async def test_too_many_streams_for_one_user_get_a_spanish_message(
        own_redis: PrivateRedis, loaded: Loaded, tmp_path: Path) -> None:
    rt = make_runtime(loaded, own_redis.url, tmp_path, live_streams_per_user=2)
    await rt.desk.auth.create_user("ana", "Ana", ["agent_n1"], "ana-pass-2026", level=1, skills=["general"])
    async with serving(rt) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        token = await login(url, "ana", "ana-pass-2026")
        ok = [Stream(c, token) for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(*(s.connected.wait() for s in ok)), 5)
        third = Stream(c, token)
        await asyncio.wait_for(third.ended.wait(), 5)
        assert third.named and third.named[0][0] == "limit"
        assert "demasiadas pestañas" in third.named[0][1]["message"]
        await ok[0].close()
        for _ in range(100):  # the closed stream's place is free again
            fourth = Stream(c, token)
            await asyncio.wait_for(fourth.connected.wait(), 5)
            if not fourth.named:
                break
            await fourth.close()
            await asyncio.sleep(0.05)
        assert not fourth.named
        for s in (ok[1], third, fourth):
            await s.close()


async def test_a_bad_last_event_id_is_refused_plainly(own_redis: PrivateRedis, loaded: Loaded, tmp_path: Path) -> None:
    rt = make_runtime(loaded, own_redis.url, tmp_path)
    await rt.desk.auth.create_user("eva", "Eva", ["supervisor"], "eva-pass-2026")
    async with serving(rt) as url, httpx.AsyncClient(base_url=url, timeout=10) as c:
        token = await login(url, "eva", "eva-pass-2026")
        r = await c.get("/desk/api/events", headers={"Last-Event-ID": "0-0x", "Cookie": f"{SESSION_COOKIE}={token}"})
        assert r.status_code in (400, 422)
        r = await c.get("/desk/api/events?last_event_id=$(rm)", headers={"Cookie": f"{SESSION_COOKIE}={token}"})
        assert r.status_code == 422 and r.json()["error_id"] == "invalid-input"
        r = await c.get("/desk/api/events")
        assert r.status_code == 401
