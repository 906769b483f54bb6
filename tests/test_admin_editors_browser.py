"""The admin page's IVR editors in a real browser (Debian's Chromium driven by Playwright, axe-core on every state).

- As an admin: add a keypad option 9 with a new answer in the flow editor (a problem shows on the step until the
  text is written), hear the answer (the audio element gets a WAV with a duration), try it in the simulator on the
  draft, publish it, compare the versions side by side; the prompts, intents («probar») and learning tabs.
- YAML -> editor -> YAML: the page's own editor code loads config/defaults/ivr.yaml and gives back the same document.
- The same edit against `atiende run` in a network namespace, then a real SIP call (baresip) presses 9 and hears the
  new answer (slow: the service loads its speech models).

Screenshots of each state go to tests/artifacts/admin-*.png.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime
from tests.a11y import assert_accessible
from tests.test_admin_editors import NEW_ANSWER
from tests.test_learning import chosen_yes

pytest_plugins = ["tests.sip_harness"]
pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
SHOTS = Path(__file__).resolve().parent / "artifacts"
IVR_YAML = Path(__file__).resolve().parent.parent / "config" / "defaults" / "ivr.yaml"
PASSWORD = "clave-segura-1"


async def _users(redis_url: str, prefix: str, data: Path) -> None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.desk.auth.create_user("marta", "Marta Admin", ["admin"], PASSWORD)
        await rt.desk.auth.create_user("sara", "Sara Supervisora", ["supervisor"], PASSWORD)
    finally:
        await rt.store.close()


async def _seed_learning(redis_url: str, prefix: str, data: Path) -> None:
    """One contact for the learning tab: a confirmation answered by comparison with the expected answers."""
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.ivr.run(chosen_yes())
    finally:
        await rt.store.close()


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    SHOTS.mkdir(exist_ok=True)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = LiveServer(lambda: make_runtime(redis_server.url, prefix, tmp_path_factory.mktemp("live"))).start()
    asyncio.run(_users(redis_server.url, prefix, tmp_path_factory.mktemp("users")))
    asyncio.run(_seed_learning(redis_server.url, prefix, tmp_path_factory.mktemp("seed")))
    yield server
    server.stop()


def login(page: Any, url: str, user: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/admin")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(re.compile(r"/admin"))
    expect(page.locator("#sections button[aria-pressed=true]")).to_have_count(1)  # the page is set up: tabs work


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"admin-{name}.png"), full_page=True)


def tab(page: Any, name: str) -> None:
    page.locator(f"#sections button[data-section={name}]").click()


def add_option_and_publish(page: Any, *, at: str = "2026-11-23T10:00", screenshots: bool = True) -> float:
    """As an admin on /admin: keypad option 9 -> cita_previa -> a new flow that says NEW_ANSWER, heard, simulated,
    published. Returns the heard audio's duration in seconds."""
    from playwright.sync_api import expect

    snap = (lambda name: shot(page, name)) if screenshots else (lambda name: None)
    tab(page, "flows")
    expect(page.get_by_test_id("flow-node-main")).to_be_visible()
    expect(page.get_by_test_id("flows-problems")).to_contain_text("Sin problemas")
    assert_accessible(page, "flows editor")
    snap("flows")

    page.get_by_test_id("flow-new-name").fill("cita")
    page.get_by_test_id("flow-new").click()
    form = page.get_by_test_id("step-form")
    expect(page.get_by_test_id("flow-node-cita")).to_be_visible()
    # the new flow's first step has no text yet: the API's dry run says so on the step itself
    expect(form.get_by_test_id("step-problems")).to_contain_text("falta el texto")
    expect(page.get_by_test_id("step-cita-0")).to_have_class(re.compile(r"\bbad\b"))
    assert_accessible(page, "flows editor with a problem on a step")
    snap("flows-problem")
    form.locator("textarea[data-field=text]").fill(NEW_ANSWER)
    expect(form.get_by_test_id("step-problems").locator("li")).to_have_count(0)

    # hear it with the configured voice
    form.get_by_test_id("listen").click()
    expect(form.get_by_test_id("listen-duration")).to_have_text(re.compile(r"^\d+,\d s$"), timeout=30_000)
    duration = float(form.get_by_test_id("listen-audio").evaluate("a => a.duration"))
    src = form.get_by_test_id("listen-audio").evaluate("a => a.currentSrc")
    assert "/api/v1/editor/prompts/audio?text=" in src

    # then back to the "more" question instead of hanging up
    page.get_by_test_id("step-cita-1").click()
    form.locator("select[data-field=verb]").select_option("goto")
    form.locator("select[data-field=flow]").select_option("more")
    # the intent goes to the new flow, and key 9 of the main menu stands for it
    page.get_by_test_id("route-cita_previa").select_option("cita")
    page.get_by_test_id("menu-add-key-main").select_option("9")
    page.get_by_test_id("menu-add-intent-main").select_option("cita_previa")
    page.get_by_test_id("menu-add-main").click()
    expect(page.get_by_test_id("menu-main")).to_contain_text("cita_previa")
    expect(page.get_by_test_id("flows-problems")).to_contain_text("Sin problemas")
    expect(page.get_by_test_id("flows-state")).to_contain_text("Cambios sin guardar")
    snap("flows-edited")

    # try the draft in the simulator, step by step
    tab(page, "simulator")
    page.get_by_test_id("sim-at").fill(at)
    page.get_by_test_id("sim-start").click()
    log = page.get_by_test_id("sim-log")
    expect(log).to_contain_text("Dígame en pocas palabras")
    expect(log).to_contain_text("9: pedir, cambiar o anular una cita previa")
    page.get_by_test_id("sim-key-9").click()
    expect(log).to_contain_text(NEW_ANSWER)
    expect(page.get_by_test_id("sim-path")).to_contain_text("cita[1] say")
    expect(page.get_by_test_id("sim-result")).to_contain_text("intención: cita_previa")
    expect(page.get_by_test_id("sim-result")).to_contain_text("con el borrador")
    assert_accessible(page, "simulator")
    snap("simulator")

    # publish
    tab(page, "flows")
    page.get_by_test_id("flows-note").fill("cita previa por teclado")
    page.get_by_test_id("flows-save").click()
    expect(page.get_by_test_id("flows-result")).to_contain_text(re.compile(r"Guardada la versión \d+\. Ya está en uso\."))
    return duration


def test_admin_adds_an_option_hears_simulates_publishes_and_compares(live: LiveServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1360, "height": 900}, locale="es-ES").new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            login(page, live.url, "marta")
            duration = add_option_and_publish(page)
            assert duration > 2.0, duration

            # the versions, side by side, with who and when
            tab(page, "versions")
            expect(page.get_by_test_id("diff-table")).to_contain_text(NEW_ANSWER[:40])
            expect(page.get_by_test_id("diff-table")).to_contain_text("marta")
            expect(page.get_by_test_id("diff-table").locator("tr.d-insert").first).to_be_visible()
            page.get_by_test_id("diff-section").select_option("prompts")
            expect(page.get_by_test_id("diff-table")).to_contain_text("Las dos versiones son iguales")
            assert_accessible(page, "versions")
            shot(page, "versions")

            # every text in one place, with today's values
            tab(page, "prompts")
            closed = page.get_by_test_id("prompt-preview-closed")
            expect(closed).to_contain_text("Nuestro horario es de lunes a")
            expect(closed).not_to_contain_text("{hours}")
            expect(page.get_by_test_id("prompt-cita-0")).to_be_visible()
            page.get_by_test_id("prompt-closed").get_by_test_id("listen").click()
            heard = page.get_by_test_id("prompt-closed").get_by_test_id("listen-duration")
            expect(heard).to_have_text(re.compile(r"^\d+,\d s$"), timeout=30_000)
            assert_accessible(page, "prompts")
            shot(page, "prompts")

            # intents: «probar» shows every intent's score and the words that counted
            tab(page, "intents")
            page.get_by_test_id("route-text").fill("quiero pagar la tasa de la itv del coche")
            page.get_by_test_id("route-try").click()
            result = page.get_by_test_id("try-result")
            expect(result).to_contain_text("→ tasa_itv")
            expect(result.locator("tbody tr")).to_have_count(12)
            expect(result.locator("tbody tr").first).to_contain_text("itv")
            page.get_by_test_id("intent-hablar_agente").locator("summary", has_text="Palabras clave").click()
            page.get_by_test_id("kw-new-hablar_agente").fill("quiero")
            page.get_by_label("Peso de la nueva palabra clave de hablar_agente").fill("0.95")  # the weight slider
            page.get_by_test_id("kw-add-hablar_agente").click()
            page.get_by_test_id("intents-save").click()
            expect(page.get_by_test_id("intents-result")).to_contain_text("empeora el acierto", timeout=30_000)
            assert_accessible(page, "intents")
            shot(page, "intents")

            tab(page, "learning")
            expect(page.get_by_test_id("learning-summary")).to_contain_text("contactos")
            expect(page.get_by_test_id("learning-confirmed").get_by_test_id("answer-chosen")).to_have_text(
                "Entendido «sí» por comparación con las respuestas esperadas (lo transcrito: «C,»; margen 4,2)")
            assert_accessible(page, "learning")
            shot(page, "learning")
            assert not errors, errors
        finally:
            browser.close()


def test_yaml_editor_yaml_round_trip_in_the_page(live: LiveServer) -> None:
    """The page's editor code on the reference file: load it, render every flow and step form (which must not write
    anything), take the document back out, print it as YAML: the same document, key for key and in order."""
    from playwright.sync_api import expect, sync_playwright

    written = yaml.safe_load(IVR_YAML.read_text(encoding="utf-8"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 1360, "height": 900}, locale="es-ES").new_page()
            login(page, live.url, "marta")
            tab(page, "flows")
            expect(page.get_by_test_id("flow-node-main")).to_be_visible()
            page.get_by_test_id("flows-yaml").locator("summary").click()
            area = page.get_by_test_id("flows-yaml-text")
            expect(area).to_have_value(re.compile(r"^entry_flow: main"))  # opening it printed the draft as YAML
            area.fill(IVR_YAML.read_text(encoding="utf-8"))
            page.get_by_test_id("flows-yaml-apply").click()
            expect(page.get_by_test_id("flows-yaml-status")).to_contain_text("aplicado")
            # visit every flow and every step (each form is built from the document)
            for flow, steps in written["flows"].items():
                page.get_by_test_id(f"flow-node-{flow}").click()
                for i in range(len(steps)):
                    page.get_by_test_id(f"step-{flow}-{i}").click()
                    expect(page.get_by_test_id("step-form")).to_contain_text(f"Paso {i + 1}")
            out = page.evaluate("async () => { const d = Admin.flowsDraft.doc;"
                                " return { json: JSON.stringify(d), yaml: await Admin.toYaml(d) }; }")
            expected = json.dumps(written, ensure_ascii=False, separators=(",", ":"))
            at = next((i for i, (x, y) in enumerate(zip(out["json"], expected, strict=False)) if x != y), None)
            near = slice(max((at or 0) - 80, 0), (at or 0) + 80)
            assert out["json"] == expected, (out["json"][near], expected[near])
            assert json.dumps(yaml.safe_load(out["yaml"])) == json.dumps(written)
            shot(page, "flows-yaml")
        finally:
            browser.close()


def test_a_supervisor_proposes_a_draft_that_an_admin_publishes(live: LiveServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            sup = browser.new_context(viewport={"width": 1360, "height": 900}, locale="es-ES").new_page()
            login(sup, live.url, "sara")
            expect(sup.locator("#sections button")).to_have_count(4)  # flows, prompts, intents, simulator
            tab(sup, "prompts")
            text = sup.get_by_test_id("prompt-text-goodbye")
            text.fill("Gracias por llamar al servicio. Hasta pronto.")
            sup.get_by_test_id("flows-save").click()
            expect(sup.get_by_test_id("flows-result")).to_contain_text("Borrador")
            assert_accessible(sup, "prompts as a supervisor")
            shot(sup, "supervisor-draft")

            admin = browser.new_context(viewport={"width": 1360, "height": 900}, locale="es-ES").new_page()
            login(admin, live.url, "marta")
            tab(admin, "versions")
            drafts = admin.get_by_test_id("drafts")
            expect(drafts).to_contain_text("sara")
            drafts.locator("button", has_text="Publicar").first.click()
            expect(admin.get_by_test_id("versions-result")).to_contain_text(re.compile(r"Publicado el borrador de \S*sara"))
            admin.get_by_test_id("diff-section").select_option("prompts")
            expect(admin.get_by_test_id("diff-table")).to_contain_text("Gracias por llamar al servicio.")
            shot(admin, "draft-published")
        finally:
            browser.close()


# ---- the published option reaches a real SIP call --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_published_option_takes_a_real_sip_call(netns: Any, netns_redis: str, redis_server: PrivateRedis,
                                                           atiende_service: Any, baresips: Any, tmp_path: Path) -> None:
    from tests.sip_harness import require_programs

    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed")
    reason = require_programs("baresip", "espeak-ng")
    if reason:
        pytest.skip(reason)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    await _users(redis_server.url, prefix, tmp_path / "seed")
    svc = await atiende_service(clock="2026-11-23T10:00:00+01:00", redis_url=netns_redis,
                                env={"ATIENDE_REDIS__PREFIX": prefix})

    def browse() -> float:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_context(viewport={"width": 1360, "height": 900}, locale="es-ES").new_page()
                login(page, svc.http_url, "marta")
                return add_option_and_publish(page, at="2026-11-23T10:00", screenshots=False)
            finally:
                browser.close()

    duration = await asyncio.to_thread(browse)
    assert duration > 2.0

    # a caller dials the line, waits for the main question and presses 9
    from tests.sip_harness import write_wav

    silence = write_wav(tmp_path / "silence.wav", b"\0\0" * 8000 * 90)
    phone = await baresips(wav=silence, user="cita")
    await phone.dial("sip:900@127.0.0.1:5060")
    rt = make_runtime(redis_server.url, prefix, tmp_path / "reader")
    try:
        rec = await _record(rt, "cita", lambda r: any("Dígame en pocas palabras" in t for t in r.said), 90)
        await phone.send_dtmf("9")
        rec = await _record(rt, "cita", lambda r: any(NEW_ANSWER in t for t in r.said), 60)
        await phone.hangup()
        assert rec.intent == "cita_previa" and rec.flows_version >= 1
        assert "cita" in [p.flow for p in rec.path] and rec.vars.get("via") != "dtmf_menu"
    finally:
        await rt.store.close()


async def _record(rt: Any, caller: str, ok: Any, within: float) -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        for rec in await rt.calls.list(limit=20):
            if caller in rec.caller:
                last = rec
                if ok(rec):
                    return rec
        await asyncio.sleep(0.3)
    raise AssertionError(f"call from {caller} never got there; last record: "
                         f"{last.model_dump_json(include={'path', 'said', 'transcripts'}) if last else None}")
