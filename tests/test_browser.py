"""The agent desk in a real browser: Debian's Chromium driven by Playwright, a real uvicorn server, the real Redis.

A citizen writes in the web chat; an N1 agent sees the ticket arrive live, takes it, replies (the citizen reads the
reply in the chat), escalates it to N2; an N2 agent takes and closes it; the citizen asks for the status by chat.
"""

from __future__ import annotations

import asyncio
import json
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
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parent / "artifacts"  # screenshots kept for people to look at (gitignored)
PASSWORD = "clave-segura-1"


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    SHOTS.mkdir(exist_ok=True)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = LiveServer(lambda: make_runtime(redis_server.url, prefix, tmp_path_factory.mktemp("live"))).start()
    server.prefix = prefix  # type: ignore[attr-defined]
    asyncio.run(_users(redis_server.url, prefix, tmp_path_factory.mktemp("users")))
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


async def _voicemail(redis_url: str, prefix: str, data_dir: Path) -> str:
    """A voicemail ticket as the IVR leaves it, with a one-second recording where the audio route serves it."""
    import math
    import struct
    import wave

    from desk.models import Interaction

    call_id = f"vm-{uuid.uuid4().hex[:8]}"
    folder = data_dir / "voicemail"
    folder.mkdir(parents=True, exist_ok=True)
    with wave.open(str(folder / f"{call_id}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8000 * 2 * math.pi * 440))) for i in range(8000)))
    rt = make_runtime(redis_url, prefix, data_dir)
    try:
        first = Interaction(kind="voicemail", channel="phone", actor="ivr", direction="in",
                            text="Hola, llamo por la beca de comedor, llámenme por favor.",
                            data={"call_id": call_id, "duration_s": 1.0})
        t = await rt.desk.tickets.create(channel="phone", queue="N1", subject="Mensaje en el buzón de voz", kind="voicemail",
                                         body=first.text, actor="ivr", first=first)
        # The filing's note, as voicemail/service.py leaves it: the audio route lets agents hear it through its ticket.
        await rt.store.redis.set(rt.store.keys.voicemail(call_id),
                                 json.dumps({"call_id": call_id, "status": "done", "ticket": t.ref}))
        return t.ref
    finally:
        await rt.store.close()


async def _seed(redis_url: str, prefix: str, data: Path) -> None:
    """Some contacts for the reports: two tickets and three contacts the assistant resolved."""
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.desk.tickets.create(channel="email", queue="N1", subject="Consulta por correo", body="¿Plazo de la beca?")
        await rt.desk.tickets.create(channel="phone", queue="N2", subject="Queja", kind="complaint", body="Queja", actor="ivr")
        for channel in ("webchat", "telegram", "phone"):
            await rt.desk.reports.record_contact(channel, contained=True)
    finally:
        await rt.store.close()


def _login(page: Any, url: str, user: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/desk")
    expect(page).to_have_url(re.compile(r"/login"))
    assert_accessible(page, "login page")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(re.compile(r"/desk$"))
    expect(page.get_by_test_id("live")).to_have_text("en directo")


def test_agent_desk_end_to_end(live: LiveServer, redis_server: PrivateRedis, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    vm_ref = asyncio.run(_voicemail(redis_server.url, live.prefix, live.runtime.data_dir))  # type: ignore[attr-defined]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            agent = browser.new_context(viewport={"width": 1280, "height": 860}, locale="es-ES").new_page()
            _login(agent, live.url, "ana")
            expect(agent.get_by_test_id("whoami")).to_have_text("Ana Informadora")
            agent.locator("[data-presence=available]").click()
            expect(agent.locator("[data-presence=available]")).to_have_class(re.compile(r"\bon\b"))
            assert_accessible(agent, "agent desk")

            citizen = browser.new_context(viewport={"width": 520, "height": 760}, locale="es-ES").new_page()
            citizen.goto(f"{live.url}/chat")
            expect(citizen.get_by_test_id("chat-state")).to_have_text("en línea")
            expect(citizen.locator(".msg.assistant").first).to_contain_text("ayudarle")
            assert_accessible(citizen, "citizens' web chat")
            citizen.get_by_test_id("chat-input").fill("Quiero hablar con una persona sobre la tarjeta sanitaria de mi madre")
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
            expect(agent.get_by_test_id("trace")).to_contain_text("la tarjeta sanitaria de mi madre")
            agent.get_by_test_id("claim").click()
            expect(agent.get_by_test_id("ticket-status")).to_have_text("asignado")

            agent.get_by_test_id("reply-text").fill("Buenos días. ¿Tiene a mano el número de la tarjeta?")
            agent.get_by_test_id("reply-send").click()
            expect(agent.get_by_test_id("action-result")).to_have_text("Respuesta enviada.")
            expect(citizen.locator(".msg.agent")).to_contain_text("número de la tarjeta")
            citizen.screenshot(path=str(SHOTS / "atiende-chat.png"))

            # A live re-render (the reply's own update) can land between Playwright resolving the textarea and
            # typing into it, so the text goes to the detached copy; a person types into the live one.
            note_text = "Caso de dependencia: necesita especialista de la consejería."
            for _ in range(5):
                agent.get_by_test_id("escalate-note").fill(note_text)
                agent.wait_for_timeout(300)
                if agent.get_by_test_id("escalate-note").input_value() == note_text:
                    break
            else:
                raise AssertionError("the escalation note never stayed in the live textarea")
            agent.get_by_test_id("escalate").click()
            expect(agent.get_by_test_id("action-result")).to_have_text("Escalado a N2.")
            expect(agent.get_by_test_id("ticket-status")).to_have_text("escalado")
            expect(agent.get_by_test_id("trace")).to_contain_text("Escalado de N1 a N2")
            expect(agent.get_by_test_id(f"ticket-{ref}")).to_have_count(0)  # gone from the N1 queue, live
            agent.screenshot(path=str(SHOTS / "atiende-desk.png"), full_page=True)
            assert_accessible(agent, "agent desk with a ticket open")

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

            # A voicemail left on the phone line: the agent plays it from the ticket's trace.
            agent.get_by_test_id("tab-queue:N1").click()
            agent.get_by_test_id(f"ticket-{vm_ref}").click()
            expect(agent.get_by_test_id("trace")).to_contain_text("beca de comedor")
            audio = agent.get_by_test_id("voicemail-audio")
            duration = audio.evaluate("a => new Promise(r => { a.onloadedmetadata = () => r(a.duration); "
                                      "a.onerror = () => r(-1); a.preload = 'metadata'; a.load(); })")
            assert 0.9 < duration < 1.1, duration
            agent.screenshot(path=str(SHOTS / "atiende-desk-voicemail.png"))

            citizen.get_by_test_id("chat-input").fill(f"¿Cómo va mi consulta {shown.group(1)}?")
            citizen.get_by_test_id("chat-send").click()
            expect(citizen.locator(".msg.assistant").last).to_contain_text("está cerrada")
            citizen.screenshot(path=str(SHOTS / "atiende-chat-status.png"))
        finally:
            browser.close()


def test_admin_and_reports_pages(live: LiveServer, redis_server: PrivateRedis, tmp_path: Path) -> None:
    """An admin asks the calendar what happens on a holiday, gets inline YAML validation and rolls a flow edit back;
    a supervisor sees the reports with their charts."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    asyncio.run(_seed(redis_server.url, live.prefix, tmp_path))  # type: ignore[attr-defined]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-ES").new_page()
            page.goto(f"{live.url}/login?next=/admin")
            page.fill("#username", "marta")
            page.fill("#password", PASSWORD)
            page.get_by_test_id("login-submit").click()
            expect(page).to_have_url(re.compile(r"/admin"))

            # Calendar: the reference hours, and "what happens at" on the Immaculate Conception.
            expect(page.get_by_test_id("hours-text")).to_contain_text("8:30")
            page.get_by_test_id("hours-at").fill("2026-12-08T10:00")
            page.get_by_test_id("hours-check").click()
            expect(page.get_by_test_id("hours-result")).to_contain_text("Cerrado")
            page.get_by_test_id("holiday-date").fill("2026-11-27")
            page.get_by_test_id("holiday-name").fill("Fiesta local de prueba")
            page.get_by_test_id("holiday-add").click()
            expect(page.get_by_test_id("holidays")).to_contain_text("Fiesta local de prueba")
            page.get_by_test_id("hours-at").fill("2026-11-27T10:00")
            page.get_by_test_id("hours-check").click()
            expect(page.get_by_test_id("hours-result")).to_contain_text("Cerrado")
            page.screenshot(path=str(SHOTS / "atiende-admin-calendar.png"), full_page=True)
            assert_accessible(page, "admin page, calendar")

            # Calendar YAML: a broken edit is refused with the reason inline; the old version keeps serving.
            editor = page.get_by_test_id("yaml-calendar")
            expect(editor).to_have_value(re.compile(r"calendars:"))
            editor.fill(editor.input_value().replace("timezone: Europe/Madrid", "timezone: Marte/Olympus", 1))
            expect(page.get_by_test_id("yaml-syntax-calendar")).to_have_text("YAML correcto")
            page.get_by_test_id("save-calendar").click()
            expect(page.get_by_test_id("yaml-result-calendar")).to_contain_text("Marte/Olympus")
            editor.fill("calendars: [unclosed")
            expect(page.get_by_test_id("yaml-syntax-calendar")).to_contain_text("línea 1")

            # IVR flows: the visual editor (edited, saved and rolled back in tests/test_admin_editors_browser.py).
            page.locator("#sections button[data-section=flows]").click()
            expect(page.get_by_test_id("routes-table")).to_contain_text("tasa_itv")
            expect(page.get_by_test_id("flows-yaml")).to_be_attached()
            assert_accessible(page, "admin page, flows")

            # Intents: try a sentence.
            page.locator("#sections button[data-section=intents]").click()
            page.get_by_test_id("route-try").click()
            expect(page.get_by_test_id("try-result")).to_contain_text("tasa_itv")

            page.locator("#sections button[data-section=people]").click()
            expect(page.get_by_test_id("agents-table")).to_contain_text("luis")
            expect(page.get_by_test_id("queues-table")).to_contain_text("N2")
            page.locator("#sections button[data-section=citizens]").click()
            expect(page.get_by_test_id("citizens-table")).to_be_visible()

            # Reports (marta is also a supervisor): the chat contacts of the other test are counted.
            page.goto(f"{live.url}/reports")
            expect(page.get_by_test_id("kpi-tickets")).not_to_contain_text("—")
            expect(page.get_by_test_id("chart-by-day").locator("svg rect").first).to_be_visible()
            page.screenshot(path=str(SHOTS / "atiende-reports.png"), full_page=True)
            assert_accessible(page, "reports page")
        finally:
            browser.close()
