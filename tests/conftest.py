"""Shared fixtures: a real redis-server per test session, a store per test, a fixed clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from atiende.runtime import Runtime
from config.loader import Loaded, load
from core.clock import FixedClock
from core.redis_server import PrivateRedis
from core.store import Store
from tests.redis_ha import RedisHA
from voicemail.recording import VoicemailWriter

MADRID = ZoneInfo("Europe/Madrid")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SHARED_ABSENT = ("../shared is not beside this clone (the team's dev sets live there, not in the repository); "
                 "clone next to it to run this check (README, 'Tests and measurements')")


def shared_file(relative: str) -> Path:
    """A file of ../shared (dev sets, scenario), or skip the test with the reason when a plain clone has none."""
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"{SHARED_ABSENT}: {relative} is missing")
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def store(redis_server: PrivateRedis) -> AsyncIterator[Store]:
    # A prefix per test keeps tests apart on one server without FLUSHALL races.
    s = Store(redis_server.url, prefix=f"t{uuid.uuid4().hex[:10]}")
    yield s
    await s.close()


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[RedisHA]:
    """A primary, two replicas and three Sentinels on loopback: after a failover one replica is left, so WAIT 1 can
    still be met (deploy/README.md, "Redis failover")."""
    cluster = RedisHA(tmp_path / "ha", replicas=2, sentinels=3, down_after_ms=1000, failover_timeout_ms=3000)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def loaded() -> Loaded:
    return load(None, env={})


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 11, 23, 10, 0, tzinfo=MADRID))


@pytest.fixture
def runtime(loaded: Loaded, store: Store, clock: FixedClock, tmp_path: Path) -> Runtime:
    data = loaded.settings.model_copy(deep=True)
    data.service.data_dir = tmp_path / "var"
    return Runtime(Loaded(settings=data, version=loaded.version, document=loaded.document), store=store, clock=clock)


ADMIN_KEY = "test-admin-key"
_AUTH_HEADERS = ("authorization", "x-api-key", "cookie")


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI. Requests to staff-only paths (desk_api.app.GUARDED) that carry no credentials of
    their own are sent as an admin, so area tests need not log in; auth tests send their own credentials."""
    from desk_api.app import GUARDED, create_app

    app = create_app(runtime)
    await runtime.desk.auth.create_api_key("test-admin", ["admin"], key=ADMIN_KEY)

    async def as_admin(request: httpx.Request) -> None:
        if request.url.path.startswith(tuple(p for p, _ in GUARDED)) and not any(h in request.headers
                                                                                  for h in _AUTH_HEADERS):
            request.headers["X-API-Key"] = ADMIN_KEY

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", event_hooks={"request": [as_admin]}) as c:
        yield c


STAFF_PASSWORD = "solo-para-pruebas-2026"  # tests only: no account has it unless a test creates it
IVR_KEY = "test-ivr-key-0123456789"


@pytest.fixture
async def staff(runtime: Runtime) -> dict[str, str]:
    """The reference scenario's people (admin, supervisora, ana N1, luis N2) with STAFF_PASSWORD and a machine
    key "ivr" (supervisor) = IVR_KEY. Without `desk.demo` no account exists by itself, so tests create theirs."""
    import asyncio

    auth = runtime.desk.auth
    await asyncio.gather(
        auth.create_user("admin", "Administración", ["admin"], STAFF_PASSWORD),
        auth.create_user("supervisora", "Sara Supervisora", ["supervisor"], STAFF_PASSWORD),
        auth.create_user("ana", "Ana Informadora", ["agent_n1"], STAFF_PASSWORD, level=1, skills=["general"],
                         sip_uri="sip:ana@127.0.0.1:5090"),
        auth.create_user("luis", "Luis Especialista", ["agent_n2"], STAFF_PASSWORD, level=2, skills=["quejas", "general"],
                         sip_uri="sip:luis@127.0.0.1:5091"),
    )
    await auth.create_api_key("ivr", ["supervisor"], key=IVR_KEY)
    return {"password": STAFF_PASSWORD, "ivr_key": IVR_KEY}


def voicemail_message(data_dir: Path, call_id: str, seconds: float = 2.0) -> VoicemailWriter:
    """A message being recorded as the IVR records one (a 300 Hz tone), ready to `finish()`."""
    import math
    import struct

    w = VoicemailWriter(data_dir, call_id)
    for f in range(int(seconds * 50)):
        w.write(struct.pack("<160h", *(int(6000 * math.sin(2 * math.pi * 300 * (f * 160 + i) / 8000))
                                       for i in range(160))))
    return w
