"""Atiende behind Kamailio (Debian package, deploy/kamailio/kamailio.cfg): the 900 line REGISTERs with digest
auth, and a call from baresip, authenticated and record-routed by Kamailio, reaches the Atiende endpoint.

Needs root (for `ip netns`) and the Debian packages kamailio, baresip, sox, espeak-ng, iproute2.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.sip_harness import Answerer, CallAudio, NetNs, RtpCapture, correlate, read_wav

pytest_plugins = ["tests.sip_harness"]
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PROXY = "sip:127.0.0.1:5060"
AOR = "sip:900@127.0.0.1"
USERS = {"900": "linea-900", "caller": "vecino"}


async def registered(ep: Any, within: float = 5.0) -> dict[str, Any]:
    for _ in range(int(within / 0.05)):
        state = ep.registrations.get(AOR, {})
        if "registered" in state:
            return dict(state)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no REGISTER outcome within {within}s: {ep.registrations}")


def registration(password: str) -> dict[str, Any]:
    from config.telephony import Registration

    return {"port": 5070, "registrations": [Registration(registrar=PROXY, user="900", password=password, expires=120)]}


async def test_registers_with_digest_and_receives_calls_through_kamailio(
    kamailio: Any, sip_endpoint: Any, baresips: Any, test_audio: CallAudio, in_netns: NetNs, tmp_path: Path
) -> None:
    capture = await RtpCapture(in_netns, tmp_path / "sip.pcap", snaplen=65535, ports=(5060, 5070)).start()
    k = await kamailio(USERS)
    prompt = test_audio.prompt_frames()
    answerer = Answerer(prompt, max_s=20)
    ep = await sip_endpoint(answerer, **registration(USERS["900"]))
    state = await registered(ep)
    assert state["registered"], f"REGISTER refused: {state}\n{k.tail()}"
    assert state["expires"] > 0

    caller = await baresips(wav=test_audio.caller_padded, user="caller", auth=("caller", USERS["caller"]), outbound=PROXY)
    await caller.dial(AOR)
    await caller.wait_event("CALL_ESTABLISHED", within=8)
    await asyncio.sleep(len(prompt) * 0.02 + 0.5)
    await caller.hangup()  # the BYE follows the Record-Route set through Kamailio
    await caller.wait_event("CALL_CLOSED", within=5)
    (res,) = await answerer.wait(1, within=10)
    assert res.error is None, res.error
    call = res.call
    assert call.caller == "caller" and call.callee == "900"
    assert call.end_reason not in (None, "normal", "handler_done", "media_timeout"), call.end_reason
    assert call.record.answered_at is not None

    up = correlate(read_wav(test_audio.caller), np.frombuffer(bytes(res.heard), dtype="<i2"))
    assert up.score > 0.9, f"Atiende heard the caller through Kamailio's routing: {up}"
    await caller.stop()
    down = correlate(read_wav(test_audio.prompt), read_wav(caller.recordings()[0]))
    assert down.score > 0.9 and down.snr_db > 20, f"caller heard the prompt: {down}"

    # now Atiende hangs up: its BYE must follow the Record-Route set (to Kamailio), not go straight to the caller
    answerer.hangup_after_s = 1.5
    second = await baresips(wav=test_audio.caller_padded, user="caller", auth=("caller", USERS["caller"]),
                            outbound=PROXY)
    await second.dial(AOR)
    await second.wait_event("CALL_ESTABLISHED", within=8)
    ev = await second.wait_event("CALL_CLOSED", within=8)
    assert "Connection reset by user" not in ev.get("param", ""), ev
    await capture.stop()
    byes = [m for m in capture.sip() if m.method == "BYE" and m.src[1] == 5070]
    assert byes, "Atiende sent no BYE"
    assert all(m.dst == ("127.0.0.1", 5060) for m in byes), [(m.dst, m.first_line) for m in byes]
    assert all("127.0.0.1" in m.route for m in byes), [m.route for m in byes]
    incoming = [m for m in capture.sip() if m.method == "BYE" and m.dst[1] == 5070]
    assert incoming and all(m.src[1] == 5060 for m in incoming), "the caller's BYE reached Atiende via Kamailio"

    # stopping the endpoint un-REGISTERs: the line is then unknown to the proxy
    await asyncio.wait_for(ep.stop(), 10)
    again = await baresips(wav=test_audio.caller_padded, user="caller", auth=("caller", USERS["caller"]), outbound=PROXY)
    await again.dial(AOR)
    ev = await again.wait_event("CALL_CLOSED", within=8)
    assert "404" in ev.get("param", ""), ev


async def test_wrong_password_and_unauthenticated_caller_are_refused(
    kamailio: Any, sip_endpoint: Any, baresips: Any, test_audio: CallAudio
) -> None:
    await kamailio(USERS)
    ep = await sip_endpoint(Answerer(), **registration("not-the-password"))
    state = await registered(ep)
    assert not state["registered"], state

    # a caller without credentials is challenged and cannot answer the challenge
    stranger = await baresips(wav=test_audio.caller_padded, user="caller", outbound=PROXY)
    await stranger.dial(AOR)
    ev = await stranger.wait_event("CALL_CLOSED", within=8)
    assert "407" in ev.get("param", "") or "401" in ev.get("param", ""), ev
    # an authenticated caller gets 404: the line never registered
    caller = await baresips(wav=test_audio.caller_padded, user="caller", auth=("caller", USERS["caller"]), outbound=PROXY)
    await caller.dial(AOR)
    ev = await caller.wait_event("CALL_CLOSED", within=8)
    assert "404" in ev.get("param", ""), ev
    assert ep.active_calls == 0
