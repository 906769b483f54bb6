"""The desk page's side of the live stream limits, in Debian's Chromium (Playwright) against the real app: a tab
past the per-user limit says so in Spanish, offers to reconnect, and reconnects once a place is free."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime
from tests.a11y import assert_accessible

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "clave-segura-live-1"


def _runtime(redis_url: str, prefix: str, data: Path) -> Any:
    rt = make_runtime(redis_url, prefix, data)
    rt.settings.desk.live_streams_per_user = 1
    return rt


async def _user(redis_url: str, prefix: str, data: Path) -> None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.desk.auth.create_user("ana", "Ana Informadora", ["agent_n1"], PASSWORD, level=1, skills=["general"])
    finally:
        await rt.store.close()


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = LiveServer(lambda: _runtime(redis_server.url, prefix, tmp_path_factory.mktemp("live"))).start()
    asyncio.run(_user(redis_server.url, prefix, tmp_path_factory.mktemp("users")))
    yield server
    server.stop()


def test_a_tab_past_the_limit_says_so_and_reconnects_when_a_place_is_free(live: LiveServer) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="es-ES")
            first = context.new_page()
            first.goto(f"{live.url}/desk")
            expect(first).to_have_url(re.compile(r"/login"))
            first.fill("#username", "ana")
            first.fill("#password", PASSWORD)
            first.get_by_test_id("login-submit").click()
            expect(first).to_have_url(re.compile(r"/desk$"))
            expect(first.get_by_test_id("live")).to_have_text("en directo")

            second = context.new_page()  # the same session: a second tab of the same agent, over the limit of 1
            second.goto(f"{live.url}/desk")
            expect(second.get_by_test_id("live")).to_contain_text("demasiadas pestañas", timeout=10_000)
            expect(second.get_by_test_id("live-retry")).to_have_text("Reconectar")
            assert_accessible(second, "desk with the stream limit message")

            first.close()
            second.get_by_test_id("live-retry").click()
            expect(second.get_by_test_id("live")).to_have_text("en directo", timeout=10_000)
            expect(second.get_by_test_id("live-retry")).to_have_count(0)
        finally:
            browser.close()
