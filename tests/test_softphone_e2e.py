"""The agent answers in the desk itself: a real caller (baresip) asks for a person, the agent's page (headless
Chromium with a WAV as its microphone) rings through Kamailio over WebSocket, the agent answers, and audio flows
both ways through rtpengine (WebRTC on the page's side, plain RTP on Atiende's), then the agent sends a key and
hangs up. Everything runs in a network namespace with only `lo`: `atiende run`, Kamailio
(deploy/kamailio/softphone.cfg), rtpengine, baresip and Chromium."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from core.redis_server import PrivateRedis
from tests.sip_harness import (
    RATE,
    HarnessError,
    NetNs,
    Proc,
    correlate,
    espeak_wav,
    read_wav,
    require_programs,
    write_wav,
)

pytest_plugins = ["tests.sip_harness"]
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

REPO = Path(__file__).resolve().parent.parent
CFG = REPO / "deploy" / "kamailio" / "softphone.cfg"
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent / "artifacts"
HAVE_CHROMIUM = CHROMIUM.exists()
HAVE_JSSIP = (REPO / "desk_api" / "web" / "vendor-jssip.min.js").is_file()
PASSWORD = "clave-segura-1"
LINE = "sip:900@127.0.0.1:5060"
KAMAILIO_SIP, WS_PORT, NG_PORT, HTTP_PORT = 5080, 8088, 2223, 8080


def _phrase(directory: Path, name: str, text: str, repeat: int, gap_s: float = 0.4) -> tuple[Path, np.ndarray]:
    one = read_wav(espeak_wav(text, directory / f"{name}-once.wav", speed=140))
    gap = np.zeros(int(gap_s * RATE), dtype="<i2")
    return write_wav(directory / f"{name}.wav", np.concatenate([np.concatenate([one, gap])] * repeat)), one


async def _rtpengine(ns: NetNs, workdir: Path) -> Proc:
    proc = ns.spawn(["rtpengine", "--foreground", "--log-stderr", "--table=-1", "--interface=127.0.0.1",
                     f"--listen-ng=127.0.0.1:{NG_PORT}", "--port-min=30000", "--port-max=30199", "--log-level=6"],
                    name="rtpengine", log=workdir / "rtpengine.log")
    await asyncio.sleep(0.5)
    if not proc.alive():
        raise HarnessError(f"rtpengine exited\n{proc.tail(30)}")
    return proc


async def _kamailio(ns: NetNs, workdir: Path, secret: str) -> Proc:
    run = workdir / "run"
    run.mkdir(parents=True, exist_ok=True)
    argv = ["kamailio", "-f", str(CFG), "-DD", "-E", "-w", str(workdir), "-Y", str(run), "-P", str(run / "k.pid"),
            "-l", f"udp:127.0.0.1:{KAMAILIO_SIP}", "-l", f"tcp:127.0.0.1:{WS_PORT}",
            "-A", f'SOFTPHONE_SECRET="{secret}"', "-A", 'ATIENDE_IP="127.0.0.1"', "-A", 'ATIENDE_URI="sip:127.0.0.1:5060"',
            "-A", f'RTPENGINE_SOCK="udp:127.0.0.1:{NG_PORT}"', "-A", f"WS_PORT={WS_PORT}",
            "-A", f'ALLOWED_ORIGIN="http://127.0.0.1:{HTTP_PORT}"', "-A", 'SIP_DOMAIN="127.0.0.1"']
    proc = ns.spawn(argv, name="kamailio", log=workdir / "kamailio.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not proc.alive():
            raise HarnessError(f"kamailio exited\n{proc.tail(40)}")
        try:
            ns.connect(WS_PORT, timeout=0.2).close()
            return proc
        except OSError:
            await asyncio.sleep(0.1)
    raise HarnessError(f"kamailio did not listen on {WS_PORT}\n{proc.tail(40)}")


async def _agent(redis_url: str, prefix: str, data: Path) -> str:
    """Ana answers in the browser; returns an admin API key to read the call records."""
    from tests._channels_support import make_runtime

    rt = make_runtime(redis_url, prefix, data)
    try:
        await rt.desk.auth.create_user("ana", "Ana Informadora", ["agent_n1"], PASSWORD, level=1, skills=["general"])
        agent = await rt.desk.agents.get("ana")
        await rt.desk.agents.upsert(agent.model_copy(update={"phone": "browser"}))
        return str(await rt.desk.auth.create_api_key("softphone-test", ["admin"]))
    finally:
        await rt.store.close()


@pytest.fixture
async def stack(netns: NetNs, netns_redis: str, redis_server: PrivateRedis, atiende_service: Any,
                tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    reason = require_programs("kamailio", "rtpengine", "baresip", "espeak-ng", "sox")
    if reason:
        pytest.skip(reason)
    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed")
    if not HAVE_JSSIP:
        pytest.fail("desk_api/web/vendor-jssip.min.js is missing: `make test` builds it from the npm package")
    secret = secrets.token_urlsafe(24)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    key = await _agent(redis_server.url, prefix, tmp_path / "seed")
    rtpengine = await _rtpengine(netns, tmp_path)
    kamailio = await _kamailio(netns, tmp_path, secret)
    softphone = (f'{{enabled: true, ws_url: "ws://127.0.0.1:{WS_PORT}", domain: "127.0.0.1:{KAMAILIO_SIP}", '
                 f'secret: "{secret}", ttl_s: 300}}')
    svc = await atiende_service(clock="2026-11-23T10:00:00+01:00", redis_url=netns_redis, http_port=HTTP_PORT,
                                env={"ATIENDE_REDIS__PREFIX": prefix, "ATIENDE_AGENTS__SOFTPHONE": softphone,
                                     "ATIENDE_AGENTS__RING_TIMEOUT_S": "30"})
    yield {"svc": svc, "prefix": prefix, "key": key, "kamailio": kamailio, "rtpengine": rtpengine}


def _browser_in(ns: NetNs, workdir: Path) -> Path:
    """Chromium runs inside the namespace (Playwright drives it over a pipe, which crosses namespaces)."""
    wrapper = workdir / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


CAPTURE_JS = """async (seconds) => {
  const stream = Softphone.state().remote;
  if (!stream) return null;
  const ctx = new AudioContext();
  const src = ctx.createMediaStreamSource(stream);
  const proc = ctx.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  proc.onaudioprocess = (e) => chunks.push(Array.from(e.inputBuffer.getChannelData(0)));
  src.connect(proc); proc.connect(ctx.destination);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  proc.disconnect(); src.disconnect(); await ctx.close();
  return { rate: ctx.sampleRate, samples: chunks.flat() };
}"""


async def test_agent_answers_in_the_desk_and_audio_flows_both_ways(stack: dict[str, Any], netns: NetNs, baresips: Any,
                                                                    tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    await asyncio.to_thread(SHOTS.mkdir, exist_ok=True)
    agent_wav, agent_phrase = _phrase(tmp_path, "agent", "Le atiende Ana, del servicio de atención a la ciudadanía.", 30)
    caller_talk, caller_phrase = _phrase(tmp_path, "caller", "Llamo por la beca de comedor de mi hija.", 25)
    caller_wav = write_wav(tmp_path / "caller-mic.wav",
                           np.concatenate([np.zeros(25 * RATE, dtype="<i2"), read_wav(caller_talk)]))
    args = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={agent_wav}", "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]
    url = f"http://127.0.0.1:{HTTP_PORT}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(_browser_in(netns, tmp_path)), args=args)
        console: list[str] = []  # written in `finally`: a file left open here outlives a failed test
        try:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-ES")).new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}\n"))
            if os.environ.get("ATIENDE_SOFTPHONE_DEBUG"):
                await page.add_init_script("localStorage.debug = 'JsSIP:*'")
            await page.goto(f"{url}/desk")
            await page.fill("#username", "ana")
            await page.fill("#password", PASSWORD)
            await page.get_by_test_id("login-submit").click()
            await expect(page.get_by_test_id("softphone-state")).to_have_attribute("data-state", "registered",
                                                                                  timeout=15_000)
            await page.locator("[data-presence=available]").click()
            await assert_accessible_async(page, "desk with the softphone")

            caller = await baresips(wav=caller_wav, user="vecina")
            await caller.dial(LINE)
            await caller.wait_event("CALL_ESTABLISHED", within=10)
            established = asyncio.get_running_loop().time()
            await asyncio.sleep(3.0)
            await caller.send_dtmf("0")  # "cero" always reaches a person while the line is open

            await expect(page.get_by_test_id("softphone-state")).to_have_attribute("data-state", "ringing",
                                                                                  timeout=30_000)
            await expect(page.get_by_test_id("softphone-context")).to_contain_text("Recorrido")
            await page.screenshot(path=str(SHOTS / "atiende-softphone-ringing.png"))
            await page.get_by_test_id("softphone-answer").click()
            await expect(page.get_by_test_id("softphone-state")).to_have_attribute("data-state", "incall",
                                                                                  timeout=10_000)
            await page.screenshot(path=str(SHOTS / "atiende-softphone-incall.png"))

            # Record what the agent hears from just before the caller's words (25 s into the call): the key pressed
            # over the welcome now reaches the agent without the question, well before them.
            await asyncio.sleep(max(0.0, established + 23.0 - asyncio.get_running_loop().time()))
            heard = await page.evaluate(CAPTURE_JS, 9)
            assert heard is not None, "no remote stream on the page"
            samples = soxr.resample(np.asarray(heard["samples"], dtype=np.float32), heard["rate"], RATE)
            at_8k = (samples * 32767).clip(-32768, 32767).astype("<i2")
            up = correlate(caller_phrase, at_8k)

            await page.get_by_test_id("softphone-key-5").click()
            await asyncio.sleep(1.0)
            await page.get_by_test_id("softphone-hangup").click()
            await caller.wait_event("CALL_CLOSED", within=10)
            # Closing the desk makes the agent unavailable for calls (the page's beacon), so none rings there.
            await page.close(run_before_unload=True)
            assert await _presence(stack["svc"].http_url, stack["key"], "ana") == "away"
        finally:
            (tmp_path / "browser-console.log").write_text("".join(console))
            await browser.close()
    await caller.stop()
    down = correlate(agent_phrase, read_wav(caller.recordings()[0]))
    print(f"softphone audio: caller -> agent's page {up}; agent -> caller {down}")
    assert up.score > 0.6, f"the agent's page did not hear the caller: {up}"
    assert down.score > 0.6, f"the caller did not hear the agent: {down}"
    dtmf = [e for e in caller.events if "DTMF" in str(e.get("type", ""))]
    assert dtmf, f"the agent's key never reached the caller: {[e.get('type') for e in caller.events]}"

    rec = await _call_record(stack["svc"].http_url, stack["key"], "vecina")
    assert rec["vars"].get("agent") == "ana" and rec["outcome"] == "transferred", rec


async def assert_accessible_async(page: Any, what: str) -> None:
    """axe-core on an async Playwright page (tests.a11y drives the sync API)."""
    from tests.a11y import AXE, WCAG_21_AA

    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                                 WCAG_21_AA)
    bad = [f"{v['id']}: {v['help']} {[n['target'] for n in v['nodes'][:3]]}" for v in result["violations"]]
    assert not bad, f"{what}: WCAG 2.1 AA violations:\n" + "\n".join(bad)


async def _presence(http_url: str, key: str, agent: str, within: float = 10.0) -> str:
    import httpx

    deadline = time.monotonic() + within
    presence = ""
    async with httpx.AsyncClient(base_url=http_url, timeout=10, headers={"X-API-Key": key}) as http:
        while time.monotonic() < deadline:
            presence = (await http.get(f"/api/v1/agents/{agent}")).json()["presence"]
            if presence == "away":
                break
            await asyncio.sleep(0.3)
    return presence


async def _call_record(http_url: str, key: str, caller: str, within: float = 20.0) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + within
    last: dict[str, Any] | None = None
    async with httpx.AsyncClient(base_url=http_url, timeout=10, headers={"X-API-Key": key}) as http:
        while time.monotonic() < deadline:
            calls = (await http.get("/api/v1/calls")).json()["calls"]
            for summary in calls:
                if caller in summary["caller"]:
                    last = (await http.get(f"/api/v1/calls/{summary['call_id']}")).json()
                    if last.get("ended_at"):
                        return last
            await asyncio.sleep(0.5)
    raise HarnessError(f"no finished call record from {caller}: {last}")
