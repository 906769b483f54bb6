"""Issue 18 in Chromium: an agent inserts a canned reply and must give a disposition to close; a supervisor gets
the SLA alert live on the desk and sees the tickets at risk, the dispositions and the CDR link on /reports; an
admin edits the lists on /admin/operaciones. Each page checked with axe-core (WCAG 2.1 AA), screenshots kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from core.clock import FixedClock
from core.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime
from tests.conftest import MADRID

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "clave-segura-1"


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = LiveServer(lambda: make_runtime(redis_server.url, prefix, tmp_path_factory.mktemp("ops"))).start()
    server.prefix = prefix  # type: ignore[attr-defined]
    yield server
    server.stop()


async def _seed(redis_url: str, prefix: str, data: Path) -> dict[str, str]:
    from desk_api.routes.operations import build_operations

    rt = make_runtime(redis_url, prefix, data)
    try:
        auth = rt.desk.auth
        await auth.create_user("sara", "Sara Supervisora", ["supervisor"], PASSWORD)
        await auth.create_user("ana", "Ana Informadora", ["agent_n1"], PASSWORD, level=1, skills=["general"])
        await auth.create_user("admin", "Administración", ["admin"], PASSWORD)
        ops = build_operations(rt.current_settings, rt.store, rt.clock, rt.desk, rt.calendars, rt.calls)
        doc = rt.settings.desk.dispositions.model_copy(update={"required": True})
        await ops.dispositions.update(doc.model_dump(), "user:admin", "obligatorias")
        fixed = rt.clock.source  # the runtime's switchable clock over the test's FixedClock
        assert isinstance(fixed, FixedClock)
        monday = fixed.now()
        fixed.set(datetime(2026, 11, 20, 10, 0, tzinfo=MADRID))  # a ticket from last Friday, never answered
        late = await rt.desk.tickets.create(channel="email", queue="N1", subject="Licencia de obras")
        fixed.set(monday)
        citizen = await rt.desk.citizens.identify("phone", "+34600111222", name="María López")
        mine = await rt.desk.tickets.create(channel="webchat", queue="N1", subject="Empadronamiento",
                                            citizen_id=citizen.id, body="¿Qué papeles necesito?")
        await rt.desk.tickets.claim(mine.ref, "ana")
        return {"late": late.ref, "mine": mine.ref}
    finally:
        await rt.store.close()


async def _sla_round(redis_url: str, prefix: str, data: Path) -> int:
    """One round of the SLA job, as the node holding the lease runs it."""
    from desk_api.routes.operations import build_operations

    rt = make_runtime(redis_url, prefix, data)
    ops = build_operations(rt.current_settings, rt.store, rt.clock, rt.desk, rt.calendars, rt.calls)
    try:
        return await ops.sla.run_once()
    finally:
        await ops.close()
        await rt.store.close()


def _login(page: object, url: str, user: str) -> None:
    page.goto(f"{url}/login?next=" + ("/admin/operaciones" if user == "admin" else "/desk"))  # type: ignore[attr-defined]
    page.fill("#username", user)  # type: ignore[attr-defined]
    page.fill("#password", PASSWORD)  # type: ignore[attr-defined]
    page.get_by_test_id("login-submit").click()  # type: ignore[attr-defined]


@pytest.mark.e2e
def test_operations_pages(live: LiveServer, redis_server: PrivateRedis, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    from tests.a11y import assert_accessible

    prefix: str = live.prefix  # type: ignore[attr-defined]
    refs = asyncio.run(_seed(redis_server.url, prefix, tmp_path))
    mine, late = refs["mine"], refs["late"]
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless", "--disable-gpu"])
        try:
            # -- the agent: a canned reply into the reply box, then a close that needs a disposition
            agent = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="es-ES").new_page()
            _login(agent, live.url, "ana")
            expect(agent.get_by_test_id("live")).to_have_text("en directo")
            agent.get_by_test_id("tab-mine").click()
            agent.get_by_test_id(f"ticket-{mine}").click()
            expect(agent.get_by_test_id("canned-select")).to_contain_text("Saludo")
            agent.get_by_test_id("canned-select").select_option("saludo")
            agent.get_by_test_id("canned-insert").click()
            expect(agent.get_by_test_id("reply-text")).to_have_value(
                f"Buenos días, María López. Gracias por contactar con el Ayuntamiento. Su referencia es "
                f"{mine[:3]}-{mine[3:]}.")
            expect(agent.get_by_test_id("disposition-hint")).to_have_text("Obligatoria para cerrar el ticket.")
            assert_accessible(agent, "desk with canned replies and dispositions")
            agent.screenshot(path=str(SHOTS / "atiende-desk-respuesta-predefinida.png"), full_page=True)
            agent.get_by_test_id("close").click()
            expect(agent.get_by_test_id("action-result")).to_contain_text("Indique una tipificación antes de cerrar")
            assert (agent.get_by_test_id("ticket-status").text_content() or "").strip() == "asignado"
            agent.screenshot(path=str(SHOTS / "atiende-desk-tipificacion-obligatoria.png"), full_page=True)
            agent.get_by_test_id("disposition-select").select_option("tramite-iniciado")
            agent.get_by_test_id("close").click()
            expect(agent.get_by_test_id("ticket-status")).to_have_text("cerrado")

            # -- the supervisor: the SLA alert arrives live on the desk
            sup = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="es-ES").new_page()
            _login(sup, live.url, "sara")
            expect(sup.get_by_test_id("live")).to_have_text("en directo")
            with ThreadPoolExecutor(1) as pool:  # Playwright's sync API runs a loop in this thread
                assert pool.submit(asyncio.run, _sla_round(redis_server.url, prefix, tmp_path)).result(30) == 1
            alert = sup.get_by_test_id("sla-breach")
            expect(alert).to_contain_text(f"Ticket {late[:3]}-{late[3:]} (cola N1): el plazo de primera respuesta ha vencido")
            assert_accessible(sup, "desk with an SLA alert")
            sup.screenshot(path=str(SHOTS / "atiende-desk-aviso-sla.png"), full_page=True)

            # -- reports: tickets at risk, dispositions, the CDR export link
            sup.goto(f"{live.url}/reports")
            expect(sup.get_by_test_id(f"sla-row-{late}")).to_contain_text("primera respuesta")
            expect(sup.get_by_test_id(f"sla-row-{late}")).to_contain_text("vencido")
            expect(sup.get_by_test_id("disp-tramite-iniciado")).to_contain_text("Trámite iniciado1")
            href = sup.get_by_test_id("cdr-download").get_attribute("href") or ""
            assert href.startswith("/api/v1/cdr.csv?since=") and "&until=" in href
            csv_text = sup.evaluate("async (u) => (await fetch(u)).text()", href)
            assert csv_text.startswith("call_id,trace_id,channel,caller")
            assert_accessible(sup, "reports with SLA and dispositions")
            sup.screenshot(path=str(SHOTS / "atiende-informes-operaciones.png"), full_page=True)

            # -- the admin edits the lists
            adm = browser.new_context(viewport={"width": 1400, "height": 1100}, locale="es-ES").new_page()
            _login(adm, live.url, "admin")
            expect(adm.get_by_test_id("disp-row").first.locator("[data-field=code]")).to_have_value("informado")
            adm.get_by_test_id("disp-add").click()
            row = adm.get_by_test_id("disp-row").last
            row.locator("[data-field=code]").fill("Mal Código")
            row.locator("[data-field=label]").fill("Con espacios")
            adm.get_by_test_id("disp-save").click()
            expect(adm.get_by_test_id("disp-msg")).to_contain_text("codes.6.code")
            row.locator("[data-field=code]").fill("padron-alta")
            adm.get_by_test_id("disp-save").click()
            expect(adm.get_by_test_id("disp-msg")).to_have_text("Guardado como versión 2.")
            adm.get_by_test_id("canned-rows").locator("textarea").first.fill("Hola {dni}")
            adm.get_by_test_id("canned-save").click()
            expect(adm.get_by_test_id("canned-msg")).to_contain_text("unknown placeholders")
            assert_accessible(adm, "admin page of dispositions and canned replies")
            adm.screenshot(path=str(SHOTS / "atiende-admin-operaciones.png"), full_page=True)
        finally:
            browser.close()
