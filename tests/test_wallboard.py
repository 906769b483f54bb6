"""The wallboard: per queue, callers waiting and the longest wait, agents by state, service level, abandon
rate and callbacks due; supervisors only; the page (normal and large type) checked in Chromium with axe."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from atiende.runtime import Runtime
from core.clock import FixedClock
from core.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "clave-segura-1"


async def _seed(rt: Runtime, clock: FixedClock) -> None:
    r, k = rt.store.redis, rt.store.keys
    now = clock.now().timestamp()
    await r.zadd(k.calls_waiting("N1"), {"call:w1": now - 95, "call:w2": now - 30})
    # answered in the last hour after 5, 12, 25 and 60 s; one caller gave up
    await r.zadd(k.queue_answers("N1"), {f"a{i}|{w}": now - 600 * i for i, w in enumerate((5.0, 12.0, 25.0, 60.0))})
    await r.zadd(k.queue_abandons("N1"), {"gone": now - 100})
    for name, presence, current in (("ana", "available", None), ("eva", "busy", "call:x"), ("leo", "away", None),
                                    ("sol", "busy", "supervise:y")):  # a supervisor (with the skill) listening
        await rt.desk.auth.create_user(name, name.title(), ["agent_n1"], PASSWORD, level=1, skills=["general"])
        await rt.desk.agents.set_presence(name, presence, actor="test", current=current)
    await rt.callbacks.create(phone="600000001", ticket_ref=None, due_at=clock.now() - timedelta(minutes=5))


@pytest.mark.anyio
async def test_wallboard_figures(runtime: Runtime, clock: FixedClock, client: httpx.AsyncClient) -> None:
    await _seed(runtime, clock)
    from tests.conftest import ADMIN_KEY

    board = (await client.get("/api/v1/wallboard", headers={"X-API-Key": ADMIN_KEY})).json()
    n1 = next(q for q in board["queues"] if q["id"] == "N1")
    assert n1["waiting"] == 2 and n1["longest_wait_s"] == 95
    assert n1["answered"] == 4 and n1["abandoned"] == 1
    assert n1["service_level"] == round(2 / 5, 3)  # 5 and 12 s within 20 s, of 4 answered + 1 abandoned
    assert n1["abandon_rate"] == 0.2 and n1["average_wait_s"] == 25.5
    assert n1["agents"]["available"] == 1 and n1["agents"]["on_call"] == 2 and n1["agents"]["away"] == 1
    assert n1["agents"]["wrap_up"] == 0
    assert board["callbacks_due"] == 1


@pytest.mark.anyio
async def test_wallboard_is_for_supervisors(runtime: Runtime, client: httpx.AsyncClient) -> None:
    key = await runtime.desk.auth.create_api_key("agent-key", ["agent_n1"])
    assert (await client.get("/api/v1/wallboard", headers={"X-API-Key": key})).status_code == 403
    assert (await client.get("/api/v1/wallboard", headers={"X-API-Key": "nope"})).status_code == 401


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = LiveServer(lambda: make_runtime(redis_server.url, prefix, tmp_path_factory.mktemp("wb"))).start()
    server.prefix = prefix  # type: ignore[attr-defined]
    yield server
    server.stop()


async def _users(redis_url: str, prefix: str, data: Path) -> None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.desk.auth.create_user("sara", "Sara Supervisora", ["supervisor"], PASSWORD)
        fixed = rt.clock.source  # the runtime's switchable clock over the test's FixedClock
        assert isinstance(fixed, FixedClock)
        await _seed(rt, fixed)
    finally:
        await rt.store.close()


@pytest.mark.e2e
def test_wallboard_page(live: LiveServer, redis_server: PrivateRedis, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    from tests.a11y import assert_accessible

    asyncio.run(_users(redis_server.url, live.prefix, tmp_path))  # type: ignore[attr-defined]
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless", "--disable-gpu"])
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}, locale="es-ES").new_page()
            page.goto(f"{live.url}/login?next=/wallboard")
            page.fill("#username", "sara")
            page.fill("#password", PASSWORD)
            page.get_by_test_id("login-submit").click()
            expect(page.get_by_test_id("wb-N1-waiting")).to_contain_text("2")
            expect(page.get_by_test_id("wb-N1-longest")).to_contain_text("1:35")
            expect(page.get_by_test_id("wb-N1-on_call")).to_contain_text("2")  # eva's call and sol listening
            expect(page.get_by_test_id("wb-callbacks")).to_contain_text("1")
            assert_accessible(page, "wallboard")
            page.screenshot(path=str(SHOTS / "atiende-wallboard.png"), full_page=True)
            page.get_by_test_id("wallboard-mode").click()
            expect(page.locator("body.big")).to_have_count(1)
            expect(page.get_by_test_id("wb-N1-waiting")).to_contain_text("2")
            assert_accessible(page, "wallboard, large type")
            page.screenshot(path=str(SHOTS / "atiende-wallboard-grande.png"), full_page=True)
        finally:
            browser.close()
