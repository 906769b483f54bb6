"""The desk in Chromium shows what became of written replies: a WhatsApp conversation outside its 24-hour window
(the template sent, the reply held) and an e-mail reply that bounced (marked failed, with the MTA's reason);
checked with axe-core and kept as screenshots in tests/artifacts/ (gitignored)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime
from tests.a11y import assert_accessible
from tests.test_browser import ARGS, CHROMIUM, PASSWORD, SHOTS

pytestmark = pytest.mark.e2e

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200)


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    SHOTS.mkdir(exist_ok=True)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = LiveServer(lambda: make_runtime(redis_server.url, prefix, tmp_path_factory.mktemp("live"))).start()
    server.prefix = prefix  # type: ignore[attr-defined]
    yield server
    server.stop()


async def _seed(redis_url: str, prefix: str, data_dir: Path) -> tuple[str, str]:
    """A WhatsApp ticket whose citizen last wrote three days ago (real time: the browser judges the window by its
    clock), with an agent's reply sent as the template; an e-mail ticket whose reply bounced."""
    from desk.models import Interaction

    rt = make_runtime(redis_url, prefix, data_dir)
    try:
        await rt.desk.auth.create_user("ana", "Ana Informadora", ["agent_n1"], PASSWORD, level=1, skills=["general"])
        ago = datetime.now(UTC) - timedelta(days=3)
        rel = Path("attachments") / "2026" / "11" / f"{hashlib.sha256(JPEG).hexdigest()}.jpg"
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_bytes(JPEG)
        photo = {"kind": "image", "name": "justificante.jpg", "content_type": "image/jpeg", "size": len(JPEG),
                 "sha256": hashlib.sha256(JPEG).hexdigest(), "path": str(rel)}
        first = Interaction(kind="chat", channel="whatsapp", actor="citizen", direction="in", at=ago,
                            text="Le envío la foto del justificante de la beca", data={"attachments": [photo]})
        wa = await rt.desk.tickets.create(channel="whatsapp", queue="N1", subject="Justificante de la beca",
                                          body=first.text, actor="assistant", first=first)
        held = Interaction(kind="chat", channel="whatsapp", actor="agent:ana", direction="out",
                           text="Hemos recibido el justificante; su beca queda completa.")
        await rt.desk.tickets.add_interaction(wa.ref, held)
        await rt.desk.tickets.set_delivery(wa.ref, held.id, "sent", details={
            "ids": ["wamid.TEMPLATE1"], "template": "consulta_respuesta_disponible", "held": True})

        mail_in = Interaction(kind="email", channel="email", actor="citizen", direction="in",
                              text="Quiero pedir cita previa para renovar el DNI")
        em = await rt.desk.tickets.create(channel="email", queue="N1", subject="Solicitud de cita", body=mail_in.text,
                                          actor="assistant", first=mail_in)
        reply = Interaction(kind="email", channel="email", actor="agent:ana", direction="out",
                            text="Le confirmamos la cita para el martes a las 10:00.")
        await rt.desk.tickets.add_interaction(em.ref, reply)
        await rt.desk.tickets.set_delivery(em.ref, reply.id, "sent", details={"ids": ["<abc@junta.example>"]})
        await rt.desk.tickets.set_delivery(em.ref, reply.id, "failed", reason=(
            "correo devuelto: estado 5.1.1; 550 5.1.1 <carmen.ruiz@correo.example>: Recipient address rejected"))
        return wa.ref, em.ref
    finally:
        await rt.store.close()


def test_desk_shows_whatsapp_window_and_bounced_reply(live: LiveServer, redis_server: PrivateRedis) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    wa_ref, mail_ref = asyncio.run(_seed(redis_server.url, live.prefix,  # type: ignore[attr-defined]
                                         live.runtime.data_dir))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1180, "height": 820}, locale="es-ES").new_page()
            page.goto(f"{live.url}/desk")
            expect(page).to_have_url(re.compile(r"/login"))
            page.fill("#username", "ana")
            page.fill("#password", PASSWORD)
            page.get_by_test_id("login-submit").click()
            expect(page.get_by_test_id("live")).to_have_text("en directo")

            page.locator(f"#tickets li[data-ref='{wa_ref}']").click()
            window = page.get_by_test_id("wa-window")
            expect(window).to_have_attribute("data-open", "false")
            expect(window).to_contain_text("Ventana de 24 h de WhatsApp cerrada")
            expect(page.get_by_test_id("delivery")).to_contain_text("se envió la plantilla «consulta_respuesta_disponible»")
            link = page.get_by_test_id("attachments").locator("a")
            expect(link).to_contain_text("justificante.jpg")
            with page.expect_response(lambda r: "/attachments/" in r.url) as served:
                page.evaluate("url => fetch(url)", link.get_attribute("href"))
            assert served.value.status == 200 and served.value.body() == JPEG
            assert_accessible(page, "desk: WhatsApp ticket outside its window")
            page.get_by_test_id("ticket-view").screenshot(path=str(SHOTS / "atiende-desk-whatsapp-window.png"))

            page.locator(f"#tickets li[data-ref='{mail_ref}']").click()
            failed = page.locator("[data-testid=delivery][data-status=failed]")
            expect(failed).to_contain_text("No entregado: correo devuelto: estado 5.1.1")
            expect(page.get_by_test_id("trace")).to_contain_text("Respuesta no entregada")
            assert_accessible(page, "desk: bounced e-mail reply")
            page.get_by_test_id("ticket-view").screenshot(path=str(SHOTS / "atiende-desk-email-bounced.png"))
        finally:
            browser.close()
