"""Single sign-on in a real browser (Debian's Chromium via Playwright): /login shows «Entrar con la cuenta
corporativa», the provider (tests/oidc_op.py, real RS256 tokens) asks for consent, the person lands on the page
they asked for with a normal desk session; an unmapped person sees the Spanish refusal page. axe-core on each."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.desk import Oidc
from core.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime
from tests.a11y import assert_accessible
from tests.oidc_op import CLIENT_ID, CLIENT_SECRET, TestProvider
from tests.test_browser import ARGS, CHROMIUM, SHOTS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def setup(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, TestProvider]]:
    SHOTS.mkdir(exist_ok=True)
    op = TestProvider()
    prefix = f"t{uuid.uuid4().hex[:10]}"

    def build() -> Any:
        rt = make_runtime(redis_server.url, prefix, tmp_path_factory.mktemp("sso"))
        rt.settings.desk.oidc = Oidc(enabled=True, issuer=op.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                     role_map={"atiende-admin": ["admin"], "atiende-agentes-n1": ["agent_n1"]})
        rt.settings.http.public_url = live.url
        return rt

    live = LiveServer(build)
    op.redirect_uris = [f"{live.url}/api/v1/auth/oidc/callback"]
    op.start()
    live.start()
    yield live, op
    live.stop()
    op.stop()


def test_sso_in_the_browser(setup: tuple[LiveServer, TestProvider]) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    live, op = setup
    op.user.update(sub="u-1001", preferred_username="marta.garcia", name="Marta García", groups=["atiende-admin"])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 860}, locale="es-ES").new_page()
            page.goto(f"{live.url}/admin")
            expect(page).to_have_url(re.compile(r"/login\?next="))
            button = page.get_by_test_id("sso-login")
            expect(button).to_have_text("Entrar con la cuenta corporativa")
            assert_accessible(page, "login page with single sign-on")
            page.screenshot(path=str(SHOTS / "sso-login.png"))
            button.click()
            expect(page).to_have_url(re.compile(rf"^{re.escape(op.issuer)}/authorize\?"))
            page.locator("#consent").click()
            expect(page).to_have_url(re.compile(r"/admin(#.*)?$"))
            expect(page.locator("#section")).to_contain_text("Calendario", timeout=10_000)
            me = page.evaluate("async () => (await fetch('/api/v1/auth/me')).json()")
            assert me["id"] == "user:oidc:marta.garcia" and me["roles"] == ["admin"], me
            page.screenshot(path=str(SHOTS / "sso-admin.png"))
            assert "atiende_session" not in page.evaluate("() => document.cookie")  # HttpOnly

            # someone the provider knows but whose groups give no Atiende role
            op.user.update(sub="u-1003", preferred_username="pepe", name="Pepe", groups=["biblioteca"])
            other = browser.new_context(locale="es-ES").new_page()
            other.goto(f"{live.url}/login")
            other.get_by_test_id("sso-login").click()
            other.locator("#consent").click()
            expect(other.get_by_test_id("sso-error")).to_contain_text("ningún perfil de Atiende")
            expect(other.locator("h2")).to_have_text("Sin acceso a Atiende")
            assert_accessible(other, "single sign-on refusal page")
            other.screenshot(path=str(SHOTS / "sso-refused.png"))
            other.get_by_test_id("sso-back").click()
            expect(other).to_have_url(re.compile(r"/login$"))
        finally:
            browser.close()


def test_ical_import_in_the_admin_page(setup: tuple[LiveServer, TestProvider], tmp_path: Path) -> None:
    """The calendar tab: a .ics file previewed (new / already there / skipped), applied as a new version."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    live, op = setup
    op.user.update(sub="u-1004", preferred_username="admin.calendario", name="Admin Calendario", groups=["atiende-admin"])
    ics = Path(__file__).resolve().parent / "data" / "ical" / "cierres_2026.ics"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="es-ES").new_page()
            page.goto(f"{live.url}/login?next=/admin")
            page.get_by_test_id("sso-login").click()
            page.locator("#consent").click()
            expect(page.get_by_test_id("ical-file")).to_be_attached(timeout=10_000)
            page.get_by_test_id("ical-file").set_input_files(str(ics))
            page.get_by_test_id("ical-preview-file").click()
            table = page.get_by_test_id("ical-table")
            expect(table).to_be_visible()
            expect(table.locator("tr[data-status=new]")).to_have_count(5)
            expect(table.locator("tr[data-status=skipped]")).to_have_count(1)
            assert_accessible(page, "admin calendar tab with the iCal preview")
            page.screenshot(path=str(SHOTS / "ical-preview.png"), full_page=True)
            page.get_by_test_id("ical-apply").click()
            expect(page.get_by_test_id("calendar-result")).to_contain_text("Importados 5 festivos")
            expect(page.get_by_test_id("holidays")).to_contain_text("Cierre de Navidad")
            page.screenshot(path=str(SHOTS / "ical-applied.png"), full_page=True)
        finally:
            browser.close()
