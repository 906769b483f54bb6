"""Issue 18.2 and 18.6 in Chromium: the wallboard lists the live agent calls with Escuchar / Susurrar al agente /
Intervenir / Salir, and a click asks the bridging node (through the store) to ring the supervisor's own phone; the
agent's desk shows the call and pauses the recording. axe-core (WCAG 2.1 AA) on each, screenshots kept.
The media side is tests/test_supervision_e2e.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from core.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "clave-segura-1"
CALL = "c-browser-1"
T = TypeVar("T")


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = LiveServer(lambda: make_runtime(redis_server.url, prefix, tmp_path_factory.mktemp("sup"))).start()
    server.prefix = prefix  # type: ignore[attr-defined]
    yield server
    server.stop()


async def _seed(redis_url: str, prefix: str, data: Path) -> None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        auth, store = rt.desk.auth, rt.store
        await auth.create_user("sara", "Sara Supervisora", ["supervisor"], PASSWORD, level=2, skills=["supervision"],
                               sip_uri="sip:sara@127.0.0.1:5092")
        await auth.create_user("ana", "Ana Informadora", ["agent_n1"], PASSWORD, level=1, skills=["general"],
                               sip_uri="sip:ana@127.0.0.1:5090")
        doc = {"call_id": CALL, "queue": "N1", "agent": "ana", "since": rt.clock.now().isoformat(), "since_ts": 1.0,
               "caller": "+34 6•• ••• 888", "recording": True, "recording_paused": False, "supervisor": None,
               "mode": None, "recording_id": "rec-00000000000000000042"}
        await store.redis.set(store.keys.call_live(CALL), json.dumps(doc), ex=600)
        await store.redis.zadd(store.keys.calls_live, {CALL: 1.0})
    finally:
        await rt.store.close()


async def _publish(redis_url: str, prefix: str, data: Path, event: dict[str, object]) -> None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.desk.events.publish(event)
    finally:
        await rt.store.close()


async def _get(redis_url: str, prefix: str, data: Path, key: str) -> str | None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        keys = rt.store.keys
        name = keys.call_supervise(CALL) if key == "supervise" else keys.call_recording_state(CALL)
        raw = await rt.store.redis.get(name)
        return str(raw) if raw is not None else None
    finally:
        await rt.store.close()


def _run(coro: Coroutine[object, object, T]) -> T:
    """A coroutine on its own loop in another thread: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _login(page: object, url: str, user: str, target: str) -> None:
    page.goto(f"{url}/login?next={target}")  # type: ignore[attr-defined]
    page.fill("#username", user)  # type: ignore[attr-defined]
    page.fill("#password", PASSWORD)  # type: ignore[attr-defined]
    page.get_by_test_id("login-submit").click()  # type: ignore[attr-defined]


@pytest.mark.e2e
def test_wallboard_supervision_and_desk_recording_pause(live: LiveServer, redis_server: PrivateRedis,
                                                        tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    from tests.a11y import assert_accessible

    prefix: str = live.prefix  # type: ignore[attr-defined]
    asyncio.run(_seed(redis_server.url, prefix, tmp_path))
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless", "--disable-gpu"])
        try:
            sup = browser.new_context(viewport={"width": 1400, "height": 1100}, locale="es-ES").new_page()
            _login(sup, live.url, "sara", "/wallboard")
            row = sup.get_by_test_id(f"wb-call-{CALL}")
            expect(row).to_contain_text("ana")
            expect(row).to_contain_text("Grabando")
            sup.get_by_test_id(f"wb-listen-{CALL}").click()
            expect(sup.locator("#supervision-msg")).to_have_text("Sonará su teléfono en unos segundos.")
            want = json.loads(_run(_get(redis_server.url, prefix, tmp_path, "supervise")) or "{}")
            assert want["mode"] == "listen" and want["uri"] == "sip:sara@127.0.0.1:5092"
            sup.get_by_test_id(f"wb-whisper-{CALL}").click()
            expect(sup.locator("#supervision-msg")).to_have_text("Sonará su teléfono en unos segundos.")
            assert_accessible(sup, "wallboard with live calls and supervision controls")
            sup.screenshot(path=str(SHOTS / "atiende-wallboard-supervision.png"), full_page=True)
            want = json.loads(_run(_get(redis_server.url, prefix, tmp_path, "supervise")) or "{}")
            assert want["mode"] == "whisper"

            agent = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="es-ES").new_page()
            _login(agent, live.url, "ana", "/desk")
            expect(agent.get_by_test_id("live")).to_have_text("en directo")
            _run(_publish(redis_server.url, prefix, tmp_path, {
                "type": "call.connected", "agent": "ana", "call_id": CALL, "recording": True}))
            _run(_publish(redis_server.url, prefix, tmp_path, {
                "type": "call.supervision", "agent": "ana", "call_id": CALL, "supervisor": "user:sara",
                "mode": "whisper", "state": "joined"}))
            state = agent.get_by_test_id("call-state")
            expect(state).to_contain_text("En llamada")
            expect(state).to_contain_text("Supervisión: le habla a usted")
            agent.get_by_test_id("recording-toggle").click()
            expect(agent.get_by_test_id("recording-state")).to_have_text("Grabación en pausa")
            assert _run(_get(redis_server.url, prefix, tmp_path, "recording")) == "paused"
            assert_accessible(agent, "desk with the call state and the recording pause")
            agent.screenshot(path=str(SHOTS / "atiende-desk-grabacion-pausa.png"), full_page=True)
            agent.get_by_test_id("recording-toggle").click()
            expect(agent.get_by_test_id("recording-state")).to_have_text("Grabando")
            assert _run(_get(redis_server.url, prefix, tmp_path, "recording")) == "recording"
        finally:
            browser.close()
