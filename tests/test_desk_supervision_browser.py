"""Issue 18 in the desk page, in Chromium: supervisors see "Llamadas en curso" (the agent calls going on now, from
GET /api/v1/calls/live) and listen / whisper / barge / leave from there, with aria-pressed on the mode asked for and
the API's refusals (409 already-supervised, no-phone) said in Spanish; in a ticket's history, the recordings of the
agent call an interaction names are listed on demand and each one fetched only when asked to (every fetch is an
audited listen). Agents see none of it. axe-core (WCAG 2.1 AA) with the panel and the recordings shown; screenshots
kept under tests/artifacts/."""

from __future__ import annotations

import asyncio
import json
import uuid
import wave
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from core.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "clave-segura-1"
CALL = "c-desk-live-1"  # ana's call, recorded, nobody supervising
TAKEN = "c-desk-live-2"  # another supervisor (marta) is listening
ENDING = "c-desk-live-3"  # ends during the test (call.ended on the live stream)
DONE = "c-desk-done-1"  # a finished call with its recordings, named by a ticket's interaction
REC = "rec-0000000000000000d001"
GONE = "rec-0000000000000000d002"  # deleted by retention
HOSTILE = '<img src=x onerror="window.pwned=1">luis'
CALLBACK = "cbdesk000001"  # a callback ana holds
T = TypeVar("T")


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    data = tmp_path_factory.mktemp("desk-sup")
    server = LiveServer(lambda: make_runtime(redis_server.url, prefix, data)).start()
    server.prefix = prefix  # type: ignore[attr-defined]
    server.data = data  # type: ignore[attr-defined]
    yield server
    server.stop()


def _live_doc(call_id: str, agent: str, **extra: Any) -> dict[str, Any]:
    doc = {"call_id": call_id, "queue": "N1", "agent": agent, "since": "2026-11-23T09:58:00+01:00", "since_ts": 1.0,
           "caller": "+34 6•• ••• 888", "recording": True, "recording_paused": False, "supervisor": None,
           "mode": None, "supervision_pending": False, "recording_id": "rec-00000000000000000042", "ticket_ref": None}
    doc.update(extra)
    return doc


async def _seed(redis_url: str, prefix: str, data: Path) -> str:
    from desk.models import Interaction
    from voicemail.recording import voicemail_dir

    rt = make_runtime(redis_url, prefix, data)
    try:
        auth, store = rt.desk.auth, rt.store
        r, k = store.redis, store.keys
        await auth.create_user("sara", "Sara Supervisora", ["supervisor"], PASSWORD, level=2, skills=["supervision"],
                               sip_uri="sip:sara@127.0.0.1:5092")
        await auth.create_user("pablo", "Pablo Supervisor", ["supervisor"], PASSWORD, level=2)  # no phone to ring
        await auth.create_user("ana", "Ana Informadora", ["agent_n1"], PASSWORD, level=1, skills=["general"],
                               sip_uri="sip:ana@127.0.0.1:5090")
        docs = [_live_doc(CALL, "ana"),
                _live_doc(TAKEN, HOSTILE, queue="N2", recording=True, recording_paused=True, supervisor="user:marta",
                          mode="listen"),
                _live_doc(ENDING, "eva", recording=False)]
        for n, doc in enumerate(docs):
            await r.set(k.call_live(doc["call_id"]), json.dumps(doc), ex=600)
            await r.zadd(k.calls_live, {doc["call_id"]: float(n + 1)})
        await r.set(k.call_supervise(TAKEN), json.dumps({"id": "x", "mode": "listen", "supervisor": "user:marta",
                                                         "agent_id": "marta", "uri": "sip:marta@127.0.0.1"}), ex=600)

        ticket = await rt.desk.tickets.create(
            channel="phone", queue="N1", subject="Consulta sobre el padrón", kind="query", trace_id="tr-desk-sup",
            actor="ivr", first=Interaction(kind="call", channel="phone", actor="citizen", direction="in",
                                           text="Llamada atendida por Ana", data={"call_id": DONE}))
        wav = voicemail_dir(data) / f"{REC}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\x00\x00" * 8000)
        await rt.recordings.put(REC, wav)
        metas = [{"id": REC, "call_id": DONE, "trace_id": "tr-desk-sup", "started_at": "2026-11-23T09:40:00+01:00",
                  "ended_at": "2026-11-23T09:41:00+01:00", "state": "done", "queue": "N1", "agent": "ana",
                  "ticket_ref": ticket.ref, "duration_s": 61.0,
                  "pauses": [{"start": "2026-11-23T09:40:20+01:00", "end": "2026-11-23T09:40:30+01:00"}]},
                 {"id": GONE, "call_id": DONE, "trace_id": "tr-desk-sup", "started_at": "2026-11-23T09:41:00+01:00",
                  "state": "done", "agent": "luis", "deleted": True}]
        for meta in metas:
            await r.set(k.call_recording(str(meta["id"])), json.dumps(meta))
            await r.rpush(k.call_recordings_of(DONE), str(meta["id"]))
        cb = await rt.callbacks.create(phone="600 111 333", ticket_ref=ticket.ref, due_at=rt.clock.now(),
                                       callback_id=CALLBACK)
        await rt.callbacks.claim(cb.id, "user:ana")  # ana holds it: her desk offers "Llamar al ciudadano"
        return str(ticket.ref)
    finally:
        await rt.store.close()


async def _joined(redis_url: str, prefix: str, data: Path, call_id: str, mode: str) -> None:
    """What the bridging node does once the supervisor's phone answers: the event, then the live entry."""
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.desk.events.publish({"type": "call.supervision", "call_id": call_id, "agent": "ana",
                                      "supervisor": "user:sara", "mode": mode, "state": "joined"})
        k = rt.store.keys
        doc = json.loads(await rt.store.redis.get(k.call_live(call_id)))
        doc.update(supervisor="user:sara", mode=mode)
        await rt.store.redis.set(k.call_live(call_id), json.dumps(doc), ex=600)
    finally:
        await rt.store.close()


async def _left(redis_url: str, prefix: str, data: Path, call_id: str) -> None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        k = rt.store.keys
        doc = json.loads(await rt.store.redis.get(k.call_live(call_id)))
        doc.update(supervisor=None, mode=None)
        await rt.store.redis.set(k.call_live(call_id), json.dumps(doc), ex=600)
        await rt.desk.events.publish({"type": "call.supervision", "call_id": call_id, "supervisor": "user:sara",
                                      "mode": None, "state": "left"})
    finally:
        await rt.store.close()


async def _end_call(redis_url: str, prefix: str, data: Path, call_id: str) -> None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.store.redis.delete(rt.store.keys.call_live(call_id))
        await rt.desk.events.publish({"type": "call.ended", "agent": "eva", "call_id": call_id})
    finally:
        await rt.store.close()


async def _supervise_request(redis_url: str, prefix: str, data: Path, call_id: str) -> dict[str, Any] | None:
    rt = make_runtime(redis_url, prefix, data)
    try:
        raw = await rt.store.redis.get(rt.store.keys.call_supervise(call_id))
        return json.loads(raw) if raw else None
    finally:
        await rt.store.close()


async def _listens(redis_url: str, prefix: str, data: Path) -> list[dict[str, Any]]:
    rt = make_runtime(redis_url, prefix, data)
    try:
        return [e for e in await rt.desk.audit.entries(200) if e.get("action") == "recording.listened"]
    finally:
        await rt.store.close()


async def _callback_call(redis_url: str, prefix: str, data: Path, state: str, outcome: str | None = None) -> None:
    """What the node placing ana's call to the citizen publishes as it goes (voicemail/callback_calls.py)."""
    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.desk.events.publish({"type": "callback.call", "agent": "ana", "callback_id": CALLBACK,
                                      "call_id": "cbc-0000000000000001", "state": state, "outcome": outcome,
                                      "ending": None})
    finally:
        await rt.store.close()


def _run(coro: Coroutine[object, object, T]) -> T:
    """A coroutine on its own loop in another thread: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _login(page: Any, url: str, user: str, target: str) -> None:
    page.goto(f"{url}/login?next={target}")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.get_by_test_id("login-submit").click()


@pytest.mark.e2e
def test_desk_live_calls_supervision_and_call_recordings(live: LiveServer, redis_server: PrivateRedis) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    from tests.a11y import assert_accessible

    prefix: str = live.prefix  # type: ignore[attr-defined]
    data: Path = live.data  # type: ignore[attr-defined]
    ref = _run(_seed(redis_server.url, prefix, data))
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless", "--disable-gpu"])
        try:
            sup = browser.new_context(viewport={"width": 1400, "height": 1200}, locale="es-ES").new_page()
            requested: list[str] = []
            sup.on("request", lambda req: requested.append(req.url))
            _login(sup, live.url, "sara", "/desk")
            expect(sup.get_by_test_id("live")).to_have_text("en directo")
            panel = sup.get_by_test_id("live-calls")
            expect(panel).to_be_visible()
            row = sup.get_by_test_id(f"live-call-{CALL}")
            for text in ("ana", "N1", "Grabando", "Nadie"):
                expect(row).to_contain_text(text)
            taken = sup.get_by_test_id(f"live-call-{TAKEN}")
            expect(taken).to_contain_text(HOSTILE)  # the agent's name is text, never markup
            expect(taken).to_contain_text("marta (escucha)")
            expect(taken).to_contain_text("En pausa")
            assert sup.evaluate("() => window.pwned === undefined")
            expect(sup.get_by_test_id(f"live-off-{CALL}")).to_be_disabled()

            # Escuchar: the POST goes out and the button shows pressed; the store holds the request for the node
            listen = sup.get_by_test_id(f"live-listen-{CALL}")
            expect(listen).to_have_attribute("aria-pressed", "false")
            with sup.expect_request(lambda r: r.method == "POST" and r.url.endswith(f"/api/v1/calls/{CALL}/supervise")) as req:
                listen.click()
            assert req.value.post_data_json == {"mode": "listen"}
            expect(listen).to_have_attribute("aria-pressed", "true")
            msg = sup.get_by_test_id("live-calls-msg")
            expect(msg).to_have_text("Escucha solicitada en la llamada de ana: sonará su teléfono en unos segundos.")
            want = _run(_supervise_request(redis_server.url, prefix, data, CALL)) or {}
            assert want["mode"] == "listen" and want["uri"] == "sip:sara@127.0.0.1:5092" and want["supervisor"] == "user:sara"
            expect(sup.get_by_test_id(f"live-off-{CALL}")).to_be_enabled()

            # Susurrar: the pressed button moves; the node's event (joined) is said in the status line
            sup.get_by_test_id(f"live-whisper-{CALL}").click()
            expect(sup.get_by_test_id(f"live-whisper-{CALL}")).to_have_attribute("aria-pressed", "true")
            expect(listen).to_have_attribute("aria-pressed", "false")
            expect(msg).to_have_text("Modo cambiado a susurro al agente en la llamada de ana.")
            _run(_joined(redis_server.url, prefix, data, CALL, "whisper"))
            expect(msg).to_have_text("Está en la llamada de ana (susurro al agente).")
            expect(row).to_contain_text("Usted (susurro al agente)")
            expect(row).not_to_contain_text("llamando")
            expect(sup.get_by_test_id(f"live-whisper-{CALL}")).to_have_attribute("aria-pressed", "true")

            # someone else's call: the 409 in Spanish, nothing pressed
            sup.get_by_test_id(f"live-listen-{TAKEN}").click()
            expect(msg).to_have_text("Otra persona ya supervisa esta llamada (marta). Espere a que salga.")
            expect(sup.get_by_test_id(f"live-listen-{TAKEN}")).to_have_attribute("aria-pressed", "false")

            # a call that ends leaves the list when the live stream says so
            expect(sup.get_by_test_id(f"live-call-{ENDING}")).to_be_visible()
            _run(_end_call(redis_server.url, prefix, data, ENDING))
            expect(sup.get_by_test_id(f"live-call-{ENDING}")).to_have_count(0)

            # the ticket's call: its recordings listed on demand, the audio fetched only when asked for
            sup.get_by_test_id(f"ticket-{ref}").click()
            expect(sup.get_by_test_id("ticket-ref")).to_be_visible()
            opener = sup.get_by_test_id("call-recordings-open")
            expect(opener).to_have_attribute("aria-expanded", "false")
            opener.click()
            expect(opener).to_have_attribute("aria-expanded", "true")
            item = sup.get_by_test_id(f"recording-{REC}")
            expect(item).to_contain_text("atendida por ana")
            expect(item).to_contain_text("duración 1:01")
            expect(item).to_contain_text("1 pausa")
            expect(sup.get_by_test_id(f"recording-{GONE}")).to_contain_text("borrada")
            expect(sup.get_by_test_id(f"recording-play-{GONE}")).to_have_count(0)
            assert not [u for u in requested if "/audio" in u], "no audio may be fetched before a listen is asked for"
            assert _run(_listens(redis_server.url, prefix, data)) == []
            assert_accessible(sup, "desk of a supervisor: live calls panel and a call's recordings listed")

            with sup.expect_response(lambda r: r.url.endswith(f"/api/v1/recordings/{REC}/audio")) as resp:
                sup.get_by_test_id(f"recording-play-{REC}").click()
            assert resp.value.status == 200
            expect(sup.get_by_test_id(f"recording-audio-{REC}")).to_be_visible()
            listens = _run(_listens(redis_server.url, prefix, data))
            assert [e["target"] for e in listens] == [REC] and listens[0]["actor"] == "user:sara"
            assert_accessible(sup, "desk of a supervisor: live calls panel and a recording being listened to")
            sup.screenshot(path=str(SHOTS / "atiende-desk-llamadas-en-curso.png"), full_page=True)
            assert len([u for u in requested if "/audio" in u]) == 1

            # Salir, from the keyboard: nothing pressed, the request withdrawn, the focus stays on the button
            off = sup.get_by_test_id(f"live-off-{CALL}")
            off.focus()
            sup.keyboard.press("Enter")
            expect(msg).to_have_text("Ha salido de la llamada de ana.")
            expect(off).to_be_focused()
            for mode in ("listen", "whisper", "barge"):
                expect(sup.get_by_test_id(f"live-{mode}-{CALL}")).to_have_attribute("aria-pressed", "false")
            assert _run(_supervise_request(redis_server.url, prefix, data, CALL)) is None
            _run(_left(redis_server.url, prefix, data, CALL))
            expect(row).to_contain_text("Nadie")
            expect(sup.get_by_test_id(f"live-off-{CALL}")).to_be_disabled()

            # a supervisor without a phone: the no-phone refusal in Spanish
            pablo = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="es-ES").new_page()
            _login(pablo, live.url, "pablo", "/desk")
            pablo.get_by_test_id(f"live-listen-{CALL}").click()
            expect(pablo.get_by_test_id("live-calls-msg")).to_contain_text("Su usuario no tiene un teléfono al que llamar")
            expect(pablo.get_by_test_id(f"live-listen-{CALL}")).to_have_attribute("aria-pressed", "false")

            # an agent: no panel, no recordings, and the API refuses the list anyway
            agent = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="es-ES").new_page()
            _login(agent, live.url, "ana", "/desk")
            expect(agent.get_by_test_id("live")).to_have_text("en directo")
            agent.get_by_test_id(f"ticket-{ref}").click()
            expect(agent.get_by_test_id("trace")).to_contain_text("Llamada atendida por Ana")
            expect(agent.get_by_test_id("live-calls")).to_have_count(0)
            expect(agent.get_by_test_id("call-recordings")).to_have_count(0)
            expect(agent.locator("[data-testid=trace] audio")).to_have_count(0)  # a call's call_id is no voicemail
            assert agent.request.get(f"{live.url}/api/v1/calls/live").status == 403
            assert agent.request.get(f"{live.url}/api/v1/recordings/{REC}/audio").status == 403
            assert_accessible(agent, "desk of an agent with a call in a ticket's history")

            # the callback she holds: "Llamar al ciudadano" asks the server (which has no line here: said in
            # Spanish), and the call's progress from the live stream is read out in the status region
            call = agent.get_by_test_id(f"callback-call-{CALLBACK}")
            expect(call).to_have_text("Llamar al ciudadano")
            with agent.expect_request(lambda r: r.method == "POST" and r.url.endswith(f"/callbacks/{CALLBACK}/call")) as req:
                call.click()
            assert req.value.post_data is None  # the page never sends a number
            status = agent.get_by_test_id("callback-call-status")
            expect(status).to_have_attribute("aria-live", "polite")
            expect(status).to_have_text("La línea telefónica no está activa ahora. Inténtelo más tarde.")
            for step, text in (("ringing_agent", "Llamando a su teléfono…"),
                               ("dialing_citizen", "Llamando al ciudadano…"),
                               ("connected", "En llamada con el ciudadano.")):
                _run(_callback_call(redis_server.url, prefix, data, step))
                expect(status).to_have_text(text)
            assert_accessible(agent, "desk of an agent calling a citizen back")
            _run(_callback_call(redis_server.url, prefix, data, "ended", "busy"))
            expect(status).to_contain_text("El ciudadano comunica")
            agent.screenshot(path=str(SHOTS / "atiende-desk-agente-sin-supervision.png"), full_page=True)
        finally:
            browser.close()
