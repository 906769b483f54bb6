"""Attacks on the SIP side, each on real loopback sockets (telephony.testing), each expected to fail.

The attacker sits on 127.0.0.2 or 127.0.0.3 (Linux answers for all of 127/8), so the trusted
proxy (Kamailio) can be 127.0.0.1 in the tests that need one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from config.telephony import SipConfig, Trunk
from telephony.call import Call
from telephony.endpoint import SipEndpoint
from telephony.errors import DialFailed
from telephony.sip.message import Request, Response, new_token, parse
from telephony.testing import RtpPeer, SipPeer, offer_sdp, tone

pytestmark = pytest.mark.anyio

Handler = Callable[[Call], Awaitable[None]]


@pytest.fixture
async def line() -> AsyncIterator[Callable[..., Awaitable[tuple[SipEndpoint, list[Call]]]]]:
    made: list[SipEndpoint] = []

    async def make(handler: Handler | None = None, **cfg: Any) -> tuple[SipEndpoint, list[Call]]:
        calls: list[Call] = []

        async def on_call(call: Call) -> None:
            calls.append(call)
            if handler is not None:
                await handler(call)

        conf = {"host": "127.0.0.1", "port": 0, "rtp_port_min": 46000, "rtp_port_max": 46999, **cfg}
        ep = SipEndpoint(SipConfig(**conf), on_call)
        await ep.start()
        made.append(ep)
        return ep, calls

    yield make
    for ep in made:
        await ep.stop(grace_s=0.3)


_open: list[SipPeer | RtpPeer] = []


async def sip_peer(host: str = "127.0.0.1") -> SipPeer:
    peer = await SipPeer.open(host)
    _open.append(peer)
    return peer


async def rtp_peer() -> RtpPeer:
    peer = await RtpPeer.open()
    _open.append(peer)
    return peer


@pytest.fixture(autouse=True)
async def _close_peers() -> AsyncIterator[None]:
    yield
    while _open:
        _open.pop().close()  # also when a test failed half-way: no socket left for a later test's GC


async def ring_forever(call: Call) -> None:
    await call.ended.wait()


async def answer_and_wait(call: Call) -> None:
    await call.answer()
    await call.ended.wait()


def invite(peer: SipPeer, ep: SipEndpoint, rtp_port: int, rtp_host: str = "127.0.0.1", **kw: Any) -> Request:
    text = peer.make("INVITE", f"sip:900@127.0.0.1:{ep.port}", body=offer_sdp(rtp_port, host=rtp_host), **kw)
    req = parse(text.encode())
    assert isinstance(req, Request)
    peer.send(text, ("127.0.0.1", ep.port))
    return req


async def finals(peer: SipPeer, within_s: float) -> list[Response]:
    return [m for m in await peer.quiet(within_s) if isinstance(m, Response) and m.status >= 200]


# ---- per-source limits ----------------------------------------------------------------------


async def test_one_address_cannot_fill_the_line(line: Any) -> None:
    ep, calls = await line(ring_forever, max_calls=10)
    attacker = await sip_peer("127.0.0.2")
    for _ in range(100):
        invite(attacker, ep, 9)
    got = await finals(attacker, 1.5)
    assert len(calls) == 4 and ep.active_calls == 4  # max_calls_per_source
    refused = [r for r in got if r.status == 503]
    assert refused and all(r.headers.get("retry-after") == "5" for r in refused)
    assert len(got) < 100  # past the burst, requests are dropped unanswered (rate limit)
    # the line still has room for everyone else
    citizen = await sip_peer("127.0.0.3")
    invite(citizen, ep, 9)
    assert (await citizen.response(180, within_s=2)).status == 180
    assert len(calls) == 5


async def test_request_rate_is_limited_per_source_but_not_for_the_trusted_proxy(line: Any) -> None:
    ep, _ = await line(trusted_proxies=["127.0.0.1"], request_burst_per_source=10, requests_per_source_s=1)
    stranger = await sip_peer("127.0.0.2")
    kamailio = await sip_peer("127.0.0.1")
    for peer in (stranger, kamailio):
        for _ in range(30):
            peer.send(peer.make("OPTIONS", f"sip:900@127.0.0.1:{ep.port}"), ("127.0.0.1", ep.port))
    assert len(await finals(stranger, 0.8)) == 10
    assert len(await finals(kamailio, 0.3)) == 30


async def test_trusted_proxy_is_exempt_from_the_per_source_call_limit(line: Any) -> None:
    ep, calls = await line(ring_forever, trusted_proxies=["127.0.0.0/24"], max_calls=8)
    kamailio = await sip_peer("127.0.0.1")
    for _ in range(8):
        invite(kamailio, ep, 9)
    await asyncio.sleep(0.5)
    assert len(calls) == 8
    invite(kamailio, ep, 9)
    assert (await kamailio.response(503, within_s=2)).headers.get("retry-after")  # max_calls still holds


# ---- media only to a confirmed peer -----------------------------------------------------------


async def test_no_rtp_to_the_sdp_address_before_the_ack(line: Any) -> None:
    ep, calls = await line(answer_and_wait)
    victim = await rtp_peer()  # named in the SDP by an attacker who never ACKs
    attacker = await sip_peer("127.0.0.2")
    invite(attacker, ep, victim.port)
    await attacker.response(200, within_s=3)
    await asyncio.sleep(1.5)  # the 200 is being retransmitted, the call's sender ticking
    assert calls and calls[0].rtp is not None and calls[0].rtp.sending
    assert victim.packets == []


async def test_rtp_flows_after_the_ack(line: Any) -> None:
    ep, _ = await line(answer_and_wait)
    rtp = await rtp_peer()
    caller = await sip_peer("127.0.0.2")
    inv = invite(caller, ep, rtp.port)
    ok = await caller.response(200, within_s=3)
    await asyncio.sleep(0.3)
    assert rtp.packets == []
    caller.send(caller.make("ACK", f"sip:900@127.0.0.1:{ep.port}", call_id=inv.call_id, from_tag=inv.from_.tag,
                            to_tag=ok.to.tag), ("127.0.0.1", ep.port))
    await asyncio.sleep(0.5)
    assert len(rtp.packets) >= 10


async def test_rtp_latches_to_a_caller_that_sends_media_before_its_ack(line: Any) -> None:
    ep, calls = await line(answer_and_wait)
    rtp = await rtp_peer()
    caller = await sip_peer("127.0.0.2")
    invite(caller, ep, 9)  # SDP says port 9 (discard); media really comes from `rtp`
    ok = await caller.response(200, within_s=3)
    body = ok.body.decode()
    media = ("127.0.0.1", int(body.split("m=audio ")[1].split()[0]))
    for _ in range(3):
        rtp.send_packet(8, b"\xd5" * 160, media)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    assert len(rtp.packets) >= 10  # symmetric RTP: that address wants media, so it gets it
    assert calls[0].state == "answering"  # still no ACK


# ---- message size and transaction memory ------------------------------------------------------


@pytest.mark.parametrize("given, kept", [("0123456789abcdef", True), ("../../x\tdrop table", False),
                                         ("f" * 200, False), ("", False)])
async def test_a_callers_trace_id_is_kept_only_in_our_shape(line: Any, given: str, kept: bool) -> None:
    """X-Trace-Id continues our own legs' traces; from a caller it is text for logs, records and the trace page."""
    ep, calls = await line(ring_forever)
    caller = await sip_peer("127.0.0.2")
    text = caller.make("INVITE", f"sip:900@127.0.0.1:{ep.port}", body=offer_sdp(40000),
                       extra=f"X-Trace-Id: {given}\r\n" if given else "")
    caller.send(text, ("127.0.0.1", ep.port))
    for _ in range(150):
        if calls:
            break
        await asyncio.sleep(0.02)
    assert len(calls) == 1
    assert (calls[0].trace_id == given) is kept and re.fullmatch("[0-9a-f]{16,32}", calls[0].trace_id)


async def test_oversized_message_gets_513_and_no_call(line: Any) -> None:
    ep, calls = await line(ring_forever)
    peer = await sip_peer("127.0.0.2")
    sdp_text = offer_sdp(9) + "a=x-padding:" + "x" * 20000 + "\r\n"
    peer.send(peer.make("INVITE", f"sip:900@127.0.0.1:{ep.port}", body=sdp_text), ("127.0.0.1", ep.port))
    resp = await peer.response(within_s=2)
    assert resp.status == 513
    assert calls == [] and ep.layer.server == {}
    peer.send(peer.make("OPTIONS", f"sip:900@127.0.0.1:{ep.port}"), ("127.0.0.1", ep.port))
    assert (await peer.response(200, within_s=2)).status == 200


async def test_transactions_are_capped_per_source_and_keep_no_bodies(line: Any) -> None:
    ep, _ = await line(requests_per_source_s=1000, request_burst_per_source=1000, max_transactions_per_source=20)
    peer = await sip_peer("127.0.0.2")
    junk = "x" * 10000
    for _ in range(60):
        peer.send(peer.make("OPTIONS", f"sip:900@127.0.0.1:{ep.port}", body=junk, content_type="text/plain"),
                  ("127.0.0.1", ep.port))
        await asyncio.sleep(0.005)  # within the socket's receive buffer: every one is read
    got = await finals(peer, 1.0)
    assert len(ep.layer.server) == 20
    assert len([r for r in got if r.status == 503]) == 40
    assert all(tx.request.body == b"" and tx.request.headers.get("content-type") is None
               for tx in ep.layer.server.values())
    other = await sip_peer("127.0.0.3")  # someone else still gets served
    other.send(other.make("OPTIONS", f"sip:900@127.0.0.1:{ep.port}"), ("127.0.0.1", ep.port))
    assert (await other.response(within_s=2)).status == 200


# ---- outbound ---------------------------------------------------------------------------------


async def test_dialling_a_number_without_a_trunk_is_refused(line: Any) -> None:
    ep, _ = await line()
    with pytest.raises(DialFailed) as exc:
        await ep.dial("600123123")
    assert exc.value.reason == "no_trunk"


@pytest.mark.parametrize("dialled", [
    "600@evil.example", "600;transport=tcp", "600>", "sip:600@127.0.0.1>;x", "sip:600@127.0.0.1?Subject=x",
    "600\r\nX-Injected: 1", "sip:a b@127.0.0.1", 'sip:"x"@127.0.0.1', "tel:600", "+34 600", "sip:600@a@b",
])
async def test_dialled_numbers_cannot_inject(line: Any, dialled: str) -> None:
    uas = await sip_peer()
    ep, _ = await line(trunk=Trunk(proxy=f"sip:127.0.0.1:{uas.port}"))
    with pytest.raises(DialFailed) as exc:
        await ep.dial(dialled, ring_timeout=1)
    assert exc.value.reason == "bad_uri"
    assert await uas.quiet(0.1) == []  # nothing left the endpoint


async def test_numbers_go_to_the_trunk(line: Any) -> None:
    uas = await sip_peer()
    ep, _ = await line(trunk=Trunk(proxy=f"sip:127.0.0.1:{uas.port}"))

    async def busy() -> None:
        inv, src = await uas.request("INVITE", within_s=3)
        assert inv.uri == "sip:+34600123123@127.0.0.1"
        uas.send(Response(486, headers=inv.headers.copy()), src)

    task = asyncio.create_task(busy())
    with pytest.raises(DialFailed) as exc:
        await ep.dial("+34600123123", from_user="x>;evil")
    assert exc.value.reason == "busy"
    await task


async def test_credentials_go_only_to_the_trunk(line: Any) -> None:
    trunk = await sip_peer()
    intruder = await sip_peer("127.0.0.2")
    ep, _ = await line(trunk=Trunk(proxy=f"sip:127.0.0.1:{trunk.port}", user="atiende", password="s3cret"))

    async def challenged_by_someone_else() -> None:
        inv, _src = await trunk.request("INVITE", within_s=3)
        h = inv.headers.copy()
        h.set("to", (h.get("to") or "") + f";tag={new_token()}")
        h.add("proxy-authenticate", 'Digest realm="trunk", nonce="n0nce", qop="auth", algorithm=MD5')
        intruder.send(Response(407, headers=h), ("127.0.0.1", ep.port))  # it saw the INVITE's branch somehow

    task = asyncio.create_task(challenged_by_someone_else())
    with pytest.raises(DialFailed) as exc:
        await ep.dial("600", ring_timeout=3)
    assert (exc.value.reason, exc.value.status) == ("auth_failed", 407)
    await task
    seen = [m for m in [*await trunk.quiet(0.3), *await intruder.quiet(0.1)] if isinstance(m, Request)]
    assert all(m.method == "ACK" for m in seen)  # no second INVITE, with credentials, to anybody
    assert not any(b"authorization" in raw.lower() for raw in [*trunk.raw, *intruder.raw])


async def test_an_agents_sip_uri_goes_to_its_host_not_the_trunk_and_gets_no_credentials(line: Any) -> None:
    # Agents' phones (and the softphone's Kamailio) are internal: with a carrier trunk configured, ringing one
    # must not go to the carrier, and a challenge from that host must not get the trunk's password.
    trunk = await sip_peer()
    agent_host = await sip_peer("127.0.0.2")
    ep, _ = await line(trunk=Trunk(proxy=f"sip:127.0.0.1:{trunk.port}", user="atiende", password="s3cret"))

    async def challenge() -> None:
        inv, src = await agent_host.request("INVITE", within_s=3)
        assert inv.uri.startswith("sip:ana@127.0.0.2")
        h = inv.headers.copy()
        h.set("to", (h.get("to") or "") + f";tag={new_token()}")
        h.add("proxy-authenticate", 'Digest realm="pbx", nonce="n0nce", qop="auth", algorithm=MD5')
        agent_host.send(Response(407, headers=h), src)

    task = asyncio.create_task(challenge())
    with pytest.raises(DialFailed):
        await ep.dial(f"sip:ana@127.0.0.2:{agent_host.port}", ring_timeout=3)
    await task
    assert await trunk.quiet(0.2) == []  # the carrier never saw it
    assert not any(b"authorization" in raw.lower() for raw in agent_host.raw)


# ---- hostile numbers in SDP ---------------------------------------------------------------------

_HUGE = "9" * 5000  # past int()'s 4300-digit limit: a plain ValueError unless the digits are bounded first
_HOSTILE_SDP = {
    "port": offer_sdp(4000).replace("m=audio 4000", f"m=audio {_HUGE}"),
    "format": offer_sdp(4000, pts=f"8 {_HUGE}"),
    "rtpmap": offer_sdp(4000) + f"a=rtpmap:{_HUGE} PCMA/8000\r\n",
    "fmtp": offer_sdp(4000) + f"a=fmtp:{_HUGE} 0-16\r\n",
    "ptime": offer_sdp(4000).replace("a=ptime:20", f"a=ptime:{_HUGE}"),
    "port 65536": offer_sdp(65536),
    "payload type 128": offer_sdp(4000, pts="8 128"),
}


async def test_hostile_sdp_numbers_get_a_final_answer_and_leave_no_open_transaction(line: Any) -> None:
    """Each such INVITE used to leave an INVITE transaction with no final response, which never expires: 64 locked
    the source out, and through a trusted proxy they filled the table until the line answered 503 to everything."""
    ep, calls = await line(ring_forever, request_burst_per_source=100)
    peer = await sip_peer("127.0.0.2")
    for body in _HOSTILE_SDP.values():
        peer.send(peer.make("INVITE", f"sip:900@127.0.0.1:{ep.port}", body=body), ("127.0.0.1", ep.port))
    got = await finals(peer, 1.0)
    assert {r.status for r in got} == {400}  # (each re-sent until its ACK, which this peer never sends)
    assert len({r.call_id for r in got}) == len(_HOSTILE_SDP)
    assert calls == [] and ep.active_calls == 0
    assert len(ep.layer.server) == len(_HOSTILE_SDP)
    assert all(tx.final_status == 400 and tx.expire is not None for tx in ep.layer.server.values())
    invite(peer, ep, 4000)  # the source is still served
    assert (await peer.response(180, within_s=2)).status == 180


async def test_hostile_sdp_in_a_reinvite_is_refused_and_the_call_goes_on(line: Any) -> None:
    ep, calls = await line(answer_and_wait)
    peer = await sip_peer("127.0.0.2")
    inv = invite(peer, ep, 4000)
    ok = await peer.response(200, within_s=3)
    ruri = f"sip:900@127.0.0.1:{ep.port}"
    peer.send(peer.make("ACK", ruri, call_id=inv.call_id, from_tag=inv.from_.tag, to_tag=ok.to.tag), ("127.0.0.1", ep.port))
    peer.send(peer.make("INVITE", ruri, call_id=inv.call_id, from_tag=inv.from_.tag, to_tag=ok.to.tag, cseq=2,
                        body=_HOSTILE_SDP["format"]), ("127.0.0.1", ep.port))
    assert (await peer.response(method="INVITE", within_s=2)).status == 400
    assert calls[0].state == "up"
    assert all(tx.final_status is not None for tx in ep.layer.server.values())


async def test_a_failure_handling_a_request_is_answered_through_its_transaction(line: Any, monkeypatch: Any) -> None:
    """Whatever goes wrong once the transaction exists, it gets a final 500 (and so expires) and no call is left."""
    from telephony import incoming

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("a handler bug")

    monkeypatch.setattr(incoming.sdp, "negotiate", broken)
    ep, calls = await line(ring_forever)
    peer = await sip_peer("127.0.0.2")
    invite(peer, ep, 4000)
    got = await finals(peer, 1.0)
    assert got and {r.status for r in got} == {500}
    assert calls == [] and ep.active_calls == 0
    [tx] = ep.layer.server.values()
    assert tx.final_status == 500 and tx.expire is not None


async def test_an_unreadable_sdp_answer_ends_the_outbound_call_with_a_bye(line: Any) -> None:
    uas = await sip_peer()
    ep, _ = await line()

    async def answer_with_a_hostile_sdp() -> None:
        inv, src = await uas.request("INVITE", within_s=3)
        h = inv.headers.copy()
        h.set("to", (h.get("to") or "") + ";tag=uas1")
        h.set("contact", f"<sip:700@127.0.0.1:{uas.port}>")
        h.set("content-type", "application/sdp")
        uas.send(Response(200, headers=h, body=_HOSTILE_SDP["port"].encode()), src)

    task = asyncio.create_task(answer_with_a_hostile_sdp())
    with pytest.raises(DialFailed) as exc:
        await ep.dial(f"sip:700@127.0.0.1:{uas.port}", ring_timeout=3)
    await task
    assert exc.value.reason == "no_common_codec"
    await uas.request("ACK", within_s=2)
    bye, _ = await uas.request("BYE", within_s=2)
    assert bye.to.tag == "uas1"
    assert ep.active_calls == 0


# ---- RTP from someone else ------------------------------------------------------------------------


async def _answered_call(line: Any, handler: Handler) -> tuple[SipEndpoint, Call, RtpPeer, tuple[str, int]]:
    """A call answered and ACKed, media flowing from the caller's RtpPeer; returns the endpoint's media address."""
    ep, calls = await line(handler)
    media_peer = await rtp_peer()
    caller = await sip_peer("127.0.0.2")
    inv = invite(caller, ep, media_peer.port)
    ok = await caller.response(200, within_s=3)
    caller.send(caller.make("ACK", f"sip:900@127.0.0.1:{ep.port}", call_id=inv.call_id, from_tag=inv.from_.tag,
                            to_tag=ok.to.tag), ("127.0.0.1", ep.port))
    media = ("127.0.0.1", int(ok.body.decode().split("m=audio ")[1].split()[0]))
    await media_peer.send_audio(tone(0.1, amplitude=0), "PCMA", media)
    return ep, calls[0], media_peer, media


async def test_rtp_from_another_source_cannot_take_over_the_call(line: Any) -> None:
    heard: list[bytes] = []
    digits: list[str] = []

    async def listen(call: Call) -> None:
        await call.answer()

        async def collect_digits() -> None:
            async for d in call.dtmf():
                digits.append(d)

        task = asyncio.create_task(collect_digits())
        async for frame in call.audio():
            heard.append(frame)
        await task

    _ep, call, legit, media = await _answered_call(line, listen)
    assert call.rtp is not None
    latched = call.rtp.params.remote
    assert latched == ("127.0.0.1", legit.port)
    attacker = await rtp_peer()  # a new SSRC with the right payload type, from another port
    for _ in range(3):
        await attacker.send_audio(tone(0.2, amplitude=12000), "PCMA", media)
        attacker.send_dtmf("5", media)
        await legit.send_audio(tone(0.1, amplitude=0), "PCMA", media)  # the caller keeps talking (silence)
    await asyncio.sleep(0.1)
    assert call.rtp.params.remote == latched
    assert digits == []
    assert heard and max(max(abs(x) for x in memoryview(f).cast("h")) for f in heard) < 100  # no attacker audio
    assert call.rtp.foreign_dropped >= 3 * (10 + 7)
    legit.send_dtmf("1", media)
    await asyncio.sleep(0.1)
    assert digits == ["1"]  # the caller's own digits still count


async def test_hostile_numbers_in_sip_headers_get_400(line: Any) -> None:
    ep, calls = await line(ring_forever)
    peer = await sip_peer("127.0.0.2")
    huge = "7" * 5000
    ruri = f"sip:900@127.0.0.1:{ep.port}"
    base = peer.make("INVITE", ruri, body=offer_sdp(4000))
    for text in (base.replace("Content-Length: ", f"Content-Length: {huge}", 1),  # escaped the transport: no answer
                 base.replace("CSeq: 1 INVITE", f"CSeq: {huge} INVITE"),  # was 500
                 base.replace("Max-Forwards: 70", f"Max-Forwards: {huge}")):
        peer.send(text, ("127.0.0.1", ep.port))
        assert (await peer.response(within_s=2)).status == 400
    assert calls == [] and ep.layer.server == {}
