"""The agent desk in a real browser: Debian's Chromium driven by Playwright, a real uvicorn server, the real Redis.

A citizen writes in the web chat; an N1 agent sees the ticket arrive live, takes it, replies (the citizen reads the
reply in the chat), escalates it to N2; an N2 agent takes and closes it; the citizen asks for the status by chat.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atiende.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SHOTS = Path("/tmp")
PASSWORD = "clave-segura-1"


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = LiveServer(lambda: make_runtime(redis_server.url, prefix, tmp_path_factory.mktemp("live"))).start()
    server.prefix = prefix  # type: ignore[attr-defined]
    yield server
    server.stop()


async def _users(redis_url: str, prefix: str, data: Path) -> None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.desk.auth.create_user("ana", "Ana Informadora", ["agent_n1"], PASSWORD, level=1, skills=["general"])
        await rt.desk.auth.create_user("luis", "Luis Especialista", ["agent_n2"], PASSWORD, level=2,
                                       skills=["general", "quejas"])
        await rt.desk.auth.create_user("marta", "Marta Admin", ["admin", "supervisor"], PASSWORD)
    finally:
        await rt.store.close()


def _login(page: Any, url: str, user: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/desk")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(re.compile(r"/desk$"))
    expect(page.get_by_test_id("live")).to_have_text("en directo")


def test_agent_desk_end_to_end(live: LiveServer, redis_server: PrivateRedis, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    asyncio.run(_users(redis_server.url, live.prefix, tmp_path))  # type: ignore[attr-defined]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            agent = browser.new_context(viewport={"width": 1280, "height": 860}, locale="es-ES").new_page()
            _login(agent, live.url, "ana")
            expect(agent.get_by_test_id("whoami")).to_have_text("Ana Informadora")
            agent.locator("[data-presence=available]").click()
            expect(agent.locator("[data-presence=available]")).to_have_class(re.compile(r"\bon\b"))

            citizen = browser.new_context(viewport={"width": 520, "height": 760}, locale="es-ES").new_page()
            citizen.goto(f"{live.url}/chat")
            expect(citizen.get_by_test_id("chat-state")).to_have_text("en línea")
            expect(citizen.locator(".msg.assistant").first).to_contain_text("ayudarle")
            citizen.get_by_test_id("chat-input").fill("Hola, quiero renovar la tarjeta sanitaria de mi madre")
            citizen.get_by_test_id("chat-send").click()
            ack = citizen.locator(".msg.assistant").nth(1)
            expect(ack).to_contain_text("referencia")
            shown = re.search(r"referencia ([2-9A-Z]{3}-[2-9A-Z]{3})", ack.inner_text())
            assert shown, ack.inner_text()
            ref = shown.group(1).replace("-", "")

            # The ticket arrives on the agent's open page by itself (SSE), no reload.
            item = agent.get_by_test_id(f"ticket-{ref}")
            expect(item).to_be_visible(timeout=10_000)
            expect(item).to_contain_text("tarjeta sanitaria")
            item.click()
            expect(agent.get_by_test_id("ticket-ref")).to_have_text(shown.group(1))
            expect(agent.get_by_test_id("trace")).to_contain_text("quiero renovar la tarjeta sanitaria")
            agent.get_by_test_id("claim").click()
            expect(agent.get_by_test_id("ticket-status")).to_have_text("asignado")

            agent.get_by_test_id("reply-text").fill("Buenos días. ¿Tiene a mano el número de la tarjeta?")
            agent.get_by_test_id("reply-send").click()
            expect(agent.get_by_test_id("action-result")).to_have_text("Respuesta enviada.")
            expect(citizen.locator(".msg.agent")).to_contain_text("número de la tarjeta")
            citizen.screenshot(path=str(SHOTS / "atiende-chat.png"))

            agent.get_by_test_id("escalate-note").fill("Caso de dependencia: necesita especialista de la consejería.")
            agent.get_by_test_id("escalate").click()
            expect(agent.get_by_test_id("ticket-status")).to_have_text("escalado")
            expect(agent.get_by_test_id("trace")).to_contain_text("Escalado de N1 a N2")
            agent.screenshot(path=str(SHOTS / "atiende-desk.png"), full_page=True)

            n2 = browser.new_context(viewport={"width": 1280, "height": 860}, locale="es-ES").new_page()
            _login(n2, live.url, "luis")
            item = n2.get_by_test_id(f"ticket-{ref}")
            expect(item).to_be_visible()
            item.click()
            expect(n2.get_by_test_id("ticket-status")).to_have_text("escalado")
            n2.get_by_test_id("claim").click()
            expect(n2.get_by_test_id("ticket-status")).to_have_text("asignado")
            n2.get_by_test_id("close").click()
            expect(n2.get_by_test_id("ticket-status")).to_have_text("cerrado")
            expect(n2.get_by_test_id(f"ticket-{ref}")).to_have_count(0)
            # The N1 page saw the ticket leave its queue live as well.
            expect(agent.get_by_test_id(f"ticket-{ref}")).to_have_count(0)

            citizen.get_by_test_id("chat-input").fill(f"¿Cómo va mi consulta {shown.group(1)}?")
            citizen.get_by_test_id("chat-send").click()
            expect(citizen.locator(".msg.assistant").last).to_contain_text("está cerrada")
            citizen.screenshot(path=str(SHOTS / "atiende-chat-status.png"))
        finally:
            browser.close()
