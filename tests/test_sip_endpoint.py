"""SipEndpoint on real loopback UDP sockets, driven by hand-written SIP messages.

One regression test per pyVoIP defect found for the issue (PCMA that was µ-law, CANCEL then
answer, one more RTP sender per re-INVITE, silent OPTIONS, BYE to unknown dialogs answered 200,
late offer, unsupported codec, malformed headers dropped, replies not sent per Via), plus the
rest of the call API.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from config.telephony import Registration, SipConfig, Trunk
from telephony import call as call_mod
from telephony import g711
from telephony.call import Call
from telephony.endpoint import SipEndpoint, refresh_delay
from telephony.errors import CallEnded, DialFailed
from telephony.g711 import audioop
from telephony.rtp import DTMF_END_PACKETS, DTMF_GAP_TICKS, DTMF_QUEUE, DTMF_TONE_TICKS
from telephony.sip import digest
from telephony.sip.message import Request, Response, parse
from telephony.testing import RtpPeer, SipPeer, offer_sdp, snr_db, tone

pytestmark = pytest.mark.anyio

Handler = Callable[[Call], Awaitable[None]]


class Rig:
    """An endpoint, a raw SIP peer and an RTP peer, all on 127.0.0.1."""

    def __init__(self, ep: SipEndpoint, sip: SipPeer, rtp: RtpPeer, calls: list[Call]) -> None:
        self.ep, self.sip, self.rtp, self.calls = ep, sip, rtp, calls
        self.addr = ("127.0.0.1", ep.port)
        self.ruri = f"sip:900@127.0.0.1:{ep.port}"

    def invite(self, body: str | None = None, *, call_id: str | None = None, branch: str | None = None,
               extra: str = "", pts: str = "8 0 101") -> Request:
        text = self.sip.make("INVITE", self.ruri, call_id=call_id, branch=branch, extra=extra,
                             body=offer_sdp(self.rtp.port, pts) if body is None else body)
        req = parse(text.encode())
        assert isinstance(req, Request)
        self.sip.send(text, self.addr)
        return req

    def in_dialog(self, method: str, invite: Request, resp: Response, *, cseq: int, body: str = "",
                  content_type: str = "application/sdp", extra: str = "") -> str:
        text = self.sip.make(method, self.ruri, call_id=invite.call_id, from_tag=invite.from_.tag, to_tag=resp.to.tag,
                             cseq=cseq, body=body, content_type=content_type, extra=extra)
        self.sip.send(text, self.addr)
        return text

    def ack(self, invite: Request, resp: Response, body: str = "") -> None:
        self.in_dialog("ACK", invite, resp, cseq=invite.cseq[0], body=body)

    async def answered_call(self, **kw: Any) -> tuple[Request, Response]:
        inv = self.invite(**kw)
        ok = await self.sip.response(200, within_s=3)
        self.ack(inv, ok)
        return inv, ok


@pytest.fixture
async def rig_factory() -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    made: list[Rig] = []

    async def make(handler: Handler | None = None, **cfg: Any) -> Rig:
        calls: list[Call] = []

        async def on_call(call: Call) -> None:
            calls.append(call)
            if handler is not None:
                await handler(call)

        conf = {"host": "127.0.0.1", "port": 0, "rtp_port_min": 42000, "rtp_port_max": 42999, **cfg}
        ep = SipEndpoint(SipConfig(**conf), on_call)
        await ep.start()
        rig = Rig(ep, await SipPeer.open(), await RtpPeer.open(), calls)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.ep.stop(grace_s=0.3)
        rig.sip.close()
        rig.rtp.close()


async def answer_and_wait(call: Call) -> None:
    await call.answer()
    await call.ended.wait()


# ---- pyVoIP regressions ---------------------------------------------------------------------


async def test_options_gets_200_with_allow_and_accept(rig_factory: Any) -> None:
    rig = await rig_factory()
    rig.sip.send(rig.sip.make("OPTIONS", rig.ruri), rig.addr)
    r = await rig.sip.response(200)
    allow = {m.strip() for v in r.headers.get_all("allow") for m in v.split(",")}
    assert {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE"} <= allow
    assert r.headers.get("accept") == "application/sdp"
    assert r.to.tag


async def test_pcma_is_really_a_law_both_ways(rig_factory: Any) -> None:
    prompt = tone(1.0, 440)
    heard: list[bytes] = []

    async def handler(call: Call) -> None:
        await call.answer()
        assert call.codec == "PCMA"

        async def listen() -> None:
            async for f in call.audio():
                heard.append(f)

        task = asyncio.create_task(listen())
        assert await call.play(prompt)
        await asyncio.sleep(0.1)
        await call.hangup()
        await task

    rig = await rig_factory(handler)
    _inv, ok = await rig.answered_call(pts="0 8 101")  # the caller prefers PCMU; our config says A-law first
    assert b"RTP/AVP 8 101" in ok.body
    ep_media = ("127.0.0.1", int(ok.body.split(b"m=audio ")[1].split()[0]))
    caller_says = tone(0.6, 1000)
    await rig.rtp.send_audio(caller_says, "PCMA", ep_media)
    bye, _ = await rig.sip.request("BYE", within_s=5)
    rig.sip.send(Response(200, headers=bye.headers.copy()), rig.addr)
    assert {r.pkt.pt for r in rig.rtp.packets} == {8}
    sent = b"".join(prompt)
    assert snr_db(sent, rig.rtp.audio_pcm()) > 30  # decoded as A-law: the prompt, clean
    assert snr_db(sent, g711.decode("PCMU", b"".join(r.pkt.payload for r in rig.rtp.packets))) < 5
    assert snr_db(b"".join(caller_says), b"".join(heard)) > 30
    rec = rig.ep.records[-1]
    assert (rec.codec, rec.end_reason, rec.direction) == ("PCMA", "normal", "in")
    assert rec.packets_sent >= len(prompt) and rec.packets_received == len(caller_says) and rec.packets_lost == 0


async def test_cancel_gets_487_and_the_call_never_starts(rig_factory: Any) -> None:
    outcome: list[str] = []

    async def slow_answer(call: Call) -> None:
        await asyncio.sleep(0.3)  # pyVoIP answered a second after the CANCEL
        try:
            await call.answer()
            outcome.append("answered")
        except CallEnded as exc:
            outcome.append(f"ended:{exc.reason}")

    rig = await rig_factory(slow_answer)
    inv = rig.invite()
    await rig.sip.response(180)
    cancel = (inv.to_bytes().decode().replace("INVITE sip", "CANCEL sip", 1).replace(" INVITE\r\n", " CANCEL\r\n")
              .replace("Content-Type: application/sdp\r\n", ""))
    cancel = cancel.split("\r\n\r\n")[0].replace(f"Content-Length: {len(inv.body)}", "Content-Length: 0") + "\r\n\r\n"
    rig.sip.send(cancel, rig.addr)
    msgs = await rig.sip.quiet(0.8)
    finals = sorted((m.status, m.cseq[1]) for m in msgs if isinstance(m, Response) and m.status >= 200)
    assert finals[:2] == [(200, "CANCEL"), (487, "INVITE")]
    assert all(s != 200 or meth != "INVITE" for s, meth in finals)
    assert outcome == ["ended:cancelled"]
    assert rig.ep.records[-1].end_reason == "cancelled" and rig.ep.active_calls == 0
    assert rig.rtp.packets == []


async def test_reinvite_keeps_exactly_one_sender(rig_factory: Any) -> None:
    rig = await rig_factory(answer_and_wait)
    inv, ok = await rig.answered_call()
    call = rig.calls[0]
    rtp_before = call.rtp
    for cseq in (2, 3, 4):  # session refreshes, the last one moves our peer to another port
        port = rig.rtp.port
        if cseq == 4:
            rig.rtp.close()
            rig.rtp = await RtpPeer.open()
            port = rig.rtp.port
        rig.in_dialog("INVITE", inv, ok, cseq=cseq, body=offer_sdp(port))
        r = await rig.sip.response(200, method="INVITE")
        rig.ack(inv, r)
        assert r.body.split(b"m=audio ")[1].split()[0] == ok.body.split(b"m=audio ")[1].split()[0]  # same port
    rig.in_dialog("UPDATE", inv, ok, cseq=5, body=offer_sdp(rig.rtp.port))
    await rig.sip.response(200, method="UPDATE")
    assert call.rtp is rtp_before
    rig.rtp.packets.clear()
    t0 = time.monotonic()
    await asyncio.sleep(1.0)
    pk = [r.pkt for r in rig.rtp.packets]
    per_s = len(pk) / (time.monotonic() - t0)  # the sleep itself runs long on a loaded machine
    assert len({p.ssrc for p in pk}) == 1  # one sender
    assert all((b.seq - a.seq) & 0xFFFF == 1 for a, b in itertools.pairwise(pk))  # one sequence, no doubles
    assert 35 <= per_s <= 56, per_s  # 50 packets per second, not 100 or 150
    rig.in_dialog("BYE", inv, ok, cseq=6)
    await rig.sip.response(200, method="BYE")


async def test_retransmitted_invite_is_absorbed(rig_factory: Any) -> None:
    gate = asyncio.Event()

    async def handler(call: Call) -> None:
        await gate.wait()
        await answer_and_wait(call)

    rig = await rig_factory(handler)
    text = rig.sip.make("INVITE", rig.ruri, body=offer_sdp(rig.rtp.port))
    rig.sip.send(text, rig.addr)
    await rig.sip.response(180)
    rig.sip.send(text, rig.addr)  # the same INVITE again (same branch): the last response again
    again = await rig.sip.response(180)
    assert again.status == 180
    gate.set()
    ok = await rig.sip.response(200, within_s=3)
    rig.sip.send(text, rig.addr)  # once more after the 200: the 200 again, no second call
    assert (await rig.sip.response(200)).to.tag == ok.to.tag
    inv = parse(text.encode())
    assert isinstance(inv, Request)
    rig.ack(inv, ok)
    await asyncio.sleep(0.1)
    assert len(rig.calls) == 1 and rig.ep.active_calls == 1


async def test_bye_for_unknown_dialog_is_481(rig_factory: Any) -> None:
    rig = await rig_factory()
    rig.sip.send(rig.sip.make("BYE", rig.ruri, to_tag="nosuchtag", call_id="nosuchcall"), rig.addr)
    assert (await rig.sip.response()).status == 481
    rig.sip.send(rig.sip.make("INFO", rig.ruri), rig.addr)  # no To tag at all: still 481
    assert (await rig.sip.response()).status == 481


async def test_invite_without_sdp_offer_in_200_answer_in_ack(rig_factory: Any) -> None:
    rig = await rig_factory(answer_and_wait)
    inv = rig.invite(body="")
    ok = await rig.sip.response(200, within_s=3)
    assert b"m=audio" in ok.body and b"RTP/AVP 8 0 101" in ok.body  # our offer, A-law first
    rig.ack(inv, ok, body=offer_sdp(rig.rtp.port, "0 101"))  # the caller answers µ-law
    await asyncio.sleep(0.3)
    call = rig.calls[0]
    assert call.codec == "PCMU" and call.state == "up"
    assert rig.rtp.packets and {r.pkt.pt for r in rig.rtp.packets} == {0}


async def test_no_common_codec_is_488(rig_factory: Any) -> None:
    rig = await rig_factory(answer_and_wait)
    rig.invite(pts="9 18 111")
    r = await rig.sip.response()
    assert r.status == 488 and r.headers.get("warning", "").startswith("305")
    await asyncio.sleep(0.1)
    assert rig.calls == []


async def ring_until_ended(call: Call) -> None:
    await call.ended.wait()


async def test_malformed_and_unusual_headers(rig_factory: Any) -> None:
    rig = await rig_factory(ring_until_ended)
    body = offer_sdp(rig.rtp.port)
    compact = (f"INVITE {rig.ruri} SIP/2.0\r\nv:SIP/2.0/UDP 127.0.0.1:{rig.sip.port};branch=z9hG4bKcmp1;rport\r\n"
               f"f:<sip:600@127.0.0.1>;tag=c1\r\nt:<{rig.ruri}>\r\ni:compact-1\r\nCSEQ:1 INVITE\r\nm:<sip:600@127.0.0.1:"
               f"{rig.sip.port}>\r\nSubject:\r\nX-Empty:\r\nmax-forwards:70\r\nc:application/sdp\r\nl:{len(body)}\r\n\r\n{body}")
    rig.sip.send(compact, rig.addr)
    assert (await rig.sip.response(180)).call_id == "compact-1"
    missing = "\r\n".join(x for x in rig.sip.make("INVITE", rig.ruri).split("\r\n") if not x.startswith("Call-ID"))
    rig.sip.send(missing, rig.addr)
    assert (await rig.sip.response()).status == 400
    rig.sip.send(b"\r\n\r\n", rig.addr)  # keep-alive: ignored
    rig.sip.send(b"\x00\xff garbage", rig.addr)
    rig.sip.send(rig.sip.make("OPTIONS", rig.ruri), rig.addr)
    assert (await rig.sip.response(200, method="OPTIONS")).status == 200
    assert [c.call_id for c in rig.calls] == ["compact-1"]


async def test_responses_follow_the_via(rig_factory: Any) -> None:
    rig = await rig_factory()
    other = await SipPeer.open()
    try:  # no rport: the response goes to the Via's sent-by port, not back to the source
        text = rig.sip.make("OPTIONS", rig.ruri).replace(f"127.0.0.1:{rig.sip.port};branch", f"127.0.0.1:{other.port};branch")
        rig.sip.send(text.replace(";rport", ""), rig.addr)
        r = await other.response(200)
        assert "received" not in r.vias[0].params
        text = rig.sip.make("OPTIONS", rig.ruri).replace(f"127.0.0.1:{rig.sip.port};branch", f"127.0.0.1:{other.port};branch")
        rig.sip.send(text, rig.addr)  # with rport: back to the source port, rport filled in
        r = await rig.sip.response(200)
        assert r.vias[0].params["rport"] == str(rig.sip.port)
    finally:
        other.close()


async def test_record_route_is_echoed_and_our_bye_follows_the_route(rig_factory: Any) -> None:
    proxy = await SipPeer.open()

    async def handler(call: Call) -> None:
        await call.answer()
        await call.hangup()

    rig = await rig_factory(handler)
    try:
        rr = f"Record-Route: <sip:127.0.0.1:{proxy.port};lr;ftag=x>"
        inv = rig.invite(extra=rr)
        ok = await rig.sip.response(200, within_s=3)
        assert ok.headers.get_all("record-route") == [f"<sip:127.0.0.1:{proxy.port};lr;ftag=x>"]
        rig.ack(inv, ok)
        bye, _ = await proxy.request("BYE", within_s=3)
        assert bye.headers.get_all("route") == [f"<sip:127.0.0.1:{proxy.port};lr;ftag=x>"]
        assert bye.uri == f"sip:600100200@127.0.0.1:{rig.sip.port}"  # loose routing: R-URI is the remote target
    finally:
        proxy.close()


# ---- the rest of the API --------------------------------------------------------------------


async def test_503_with_retry_after_at_capacity(rig_factory: Any) -> None:
    rig = await rig_factory(answer_and_wait, max_calls=1)
    await rig.answered_call()
    rig.invite()
    r = await rig.sip.response()
    assert r.status == 503 and r.headers.get("retry-after") == "5"


async def test_dtmf_rfc4733_and_info_and_barge_in(rig_factory: Any) -> None:
    got: list[str] = []
    played: list[bool] = []

    async def handler(call: Call) -> None:
        await call.answer()
        played.append(await call.play(tone(3.0)))  # a digit stops the prompt
        async for d in call.dtmf():
            got.append(d)
            if len(got) == 3:
                await call.hangup()

    rig = await rig_factory(handler)
    inv, ok = await rig.answered_call()
    media = ("127.0.0.1", int(ok.body.split(b"m=audio ")[1].split()[0]))
    await asyncio.sleep(0.2)
    rig.rtp.send_dtmf("5", media)
    await asyncio.sleep(0.2)
    rig.rtp.send_dtmf("#", media)
    rig.in_dialog("INFO", inv, ok, cseq=2, body="Signal=7\r\nDuration=160\r\n", content_type="application/dtmf-relay")
    await rig.sip.request("BYE", within_s=3)
    assert played == [False]
    assert got == ["5", "#", "7"]
    assert rig.ep.records[-1].dtmf_received == "5#7"
    assert rig.ep.records[-1].packets_lost == 0  # event packets share the sequence space: not losses


async def test_hangup_overtakes_queued_audio(rig_factory: Any) -> None:
    results: list[bool] = []

    async def handler(call: Call) -> None:
        await call.answer()
        play = asyncio.create_task(call.play(tone(5.0)))
        await asyncio.sleep(0.3)
        await call.hangup()
        results.append(await play)

    rig = await rig_factory(handler)
    await rig.answered_call()
    _bye, _ = await rig.sip.request("BYE", within_s=2)
    assert results == [False]
    n = len(rig.rtp.packets)
    await asyncio.sleep(0.1)
    assert len(rig.rtp.packets) == n and n < 40  # nothing after the BYE


async def test_media_timeout_ends_the_call(rig_factory: Any) -> None:
    rig = await rig_factory(answer_and_wait, media_timeout_s=0.4)
    await rig.answered_call()
    await rig.sip.request("BYE", within_s=3)
    assert rig.ep.records[-1].end_reason == "media_timeout"


@pytest.mark.parametrize("hold", ["inactive", "sendonly", "c=0.0.0.0"])
async def test_a_hold_longer_than_the_media_timeout_then_a_resume_keeps_the_call(rig_factory: Any, hold: str) -> None:
    """A phone on hold may send nothing: neither the hold (we are recvonly or inactive) nor the resume (whose
    first tick saw silence since the hold began) is a media timeout. The timeout still counts after the resume."""
    rig = await rig_factory(answer_and_wait, media_timeout_s=0.5)
    inv, ok = await rig.answered_call()
    media = ("127.0.0.1", int(ok.body.decode().split("m=audio ")[1].split()[0]))
    silence = [bytes(320)] * 10
    await rig.rtp.send_audio(silence, "PCMA", media)

    async def reinvite(cseq: int, body: str) -> None:
        rig.in_dialog("INVITE", inv, ok, cseq=cseq, body=body)
        for _ in range(10):
            resp = await rig.sip.response(method="INVITE", within_s=2)
            if resp.cseq[0] == cseq:
                break
        assert resp.status == 200
        rig.in_dialog("ACK", inv, ok, cseq=cseq)

    held = (offer_sdp(rig.rtp.port, host="0.0.0.0") if hold == "c=0.0.0.0"
            else offer_sdp(rig.rtp.port, direction=hold))
    await reinvite(2, held)
    await asyncio.sleep(1.2)  # on hold, not a packet: more than twice the media timeout
    assert rig.calls[0].state == "up"
    await reinvite(3, offer_sdp(rig.rtp.port))
    await asyncio.sleep(0.1)  # the phone's audio follows its resume a few packet times later
    await rig.rtp.send_audio(silence * 2, "PCMA", media)  # the caller talks again
    assert rig.calls[0].state == "up"
    assert not [m for m in await rig.sip.quiet(0.05) if isinstance(m, Request) and m.method == "BYE"]
    await rig.sip.request("BYE", within_s=3)  # and then falls silent on a two-way stream: that is a timeout
    assert rig.ep.records[-1].end_reason == "media_timeout"


async def test_blind_transfer_with_refer(rig_factory: Any) -> None:
    outcome: list[bool] = []

    async def handler(call: Call) -> None:
        await call.answer()
        outcome.append(await call.transfer("sip:agent7@127.0.0.1:5999"))

    rig = await rig_factory(handler)
    inv, ok = await rig.answered_call()
    refer, _ = await rig.sip.request("REFER", within_s=3)
    assert refer.headers.get("refer-to") == "<sip:agent7@127.0.0.1:5999>"
    rig.sip.send(Response(202, headers=refer.headers.copy()), rig.addr)
    for n, frag in ((2, "SIP/2.0 100 Trying"), (3, "SIP/2.0 200 OK")):
        rig.in_dialog("NOTIFY", inv, ok, cseq=n, body=frag + "\r\n", content_type="message/sipfrag;version=2.0",
                      extra="Event: refer\r\nSubscription-State: active;expires=60")
        await rig.sip.response(200, method="NOTIFY")
    await rig.sip.request("BYE", within_s=3)
    assert outcome == [True] and rig.ep.records[-1].end_reason == "transferred"


async def test_refer_received_is_refused_and_unknown_methods_405(rig_factory: Any) -> None:
    rig = await rig_factory(answer_and_wait)
    inv, ok = await rig.answered_call()
    rig.in_dialog("REFER", inv, ok, cseq=2, extra="Refer-To: <sip:x@127.0.0.1>")
    assert (await rig.sip.response(method="REFER")).status == 405
    rig.sip.send(rig.sip.make("SUBSCRIBE", rig.ruri), rig.addr)
    assert (await rig.sip.response(method="SUBSCRIBE")).status == 405


async def test_dial_with_digest_then_hangup(rig_factory: Any) -> None:
    uas = await SipPeer.open()
    rtp = await RtpPeer.open()
    rig = await rig_factory(trunk=Trunk(proxy=f"sip:127.0.0.1:{uas.port}", user="atiende", password="s3cret",
                                        from_user="900123456"))

    async def carrier() -> None:
        inv, src = await uas.request("INVITE", within_s=3)
        h = inv.headers.copy()
        h.add("proxy-authenticate", 'Digest realm="trunk", nonce="n0nce", qop="auth", algorithm=MD5')
        uas.send(Response(407, headers=h), src)
        await uas.request("ACK")
        inv2, src = await uas.request("INVITE")
        assert digest.verify(inv2.headers.get("proxy-authorization") or "", password="s3cret", method="INVITE")
        assert inv2.cseq[0] == inv.cseq[0] + 1 and inv2.call_id == inv.call_id
        h = inv2.headers.copy()
        h.set("to", (h.get("to") or "") + ";tag=uas1")
        uas.send(Response(180, headers=h), src)
        h.set("contact", f"<sip:600@127.0.0.1:{uas.port}>")
        h.set("content-type", "application/sdp")
        uas.send(Response(200, headers=h, body=offer_sdp(rtp.port, "0 101").encode()), src)
        ack, _ = await uas.request("ACK")
        assert ack.to.tag == "uas1" and ack.cseq == (inv2.cseq[0], "ACK")

    task = asyncio.create_task(carrier())
    call = await rig.ep.dial("600", ring_timeout=5)
    await task
    assert call.direction == "out" and call.codec == "PCMU" and call.caller == "900123456"
    await asyncio.sleep(0.2)
    await call.hangup()
    bye, _src = await uas.request("BYE")
    assert bye.to.tag == "uas1"
    assert {r.pkt.pt for r in rtp.packets} == {0}
    uas.close()
    rtp.close()


async def test_dial_no_answer_sends_cancel(rig_factory: Any) -> None:
    uas = await SipPeer.open()
    rig = await rig_factory()

    async def ringing_forever() -> None:
        inv, src = await uas.request("INVITE", within_s=3)
        h = inv.headers.copy()
        h.set("to", (h.get("to") or "") + ";tag=r1")
        uas.send(Response(180, headers=h), src)
        cancel, src = await uas.request("CANCEL")
        uas.send(Response(200, headers=cancel.headers.copy()), src)
        uas.send(Response(487, headers=h), src)
        await uas.request("ACK")

    task = asyncio.create_task(ringing_forever())
    with pytest.raises(DialFailed) as exc:
        await rig.ep.dial(f"sip:700@127.0.0.1:{uas.port}", ring_timeout=0.5)
    assert exc.value.reason == "no_answer"
    await asyncio.wait_for(task, 3)
    uas.close()


async def test_an_abandoned_dial_whose_200_crosses_the_cancel_is_acked_and_hung_up(rig_factory: Any) -> None:
    """The dial is cancelled (the caller hung up while an agent's phone rang) just as the phone answers: the 200
    crosses our CANCEL. The answered phone must get its ACK and a BYE, not sit in a call nobody is on."""
    uas = await SipPeer.open()
    rtp = await RtpPeer.open()
    rig = await rig_factory()
    invited = asyncio.Event()

    async def answers_as_the_cancel_arrives() -> None:
        inv, src = await uas.request("INVITE", within_s=3)
        h = inv.headers.copy()
        h.set("to", (h.get("to") or "") + ";tag=x1")
        uas.send(Response(180, headers=h), src)
        invited.set()
        cancel, csrc = await uas.request("CANCEL")
        h.set("contact", f"<sip:700@127.0.0.1:{uas.port}>")
        h.set("content-type", "application/sdp")
        uas.send(Response(200, headers=h, body=offer_sdp(rtp.port, "8 101").encode()), src)  # too late to cancel
        uas.send(Response(200, headers=cancel.headers.copy()), csrc)
        ack, _ = await uas.request("ACK")
        bye, bsrc = await uas.request("BYE")
        assert ack.to.tag == bye.to.tag == "x1" and bye.call_id == inv.call_id
        uas.send(Response(200, headers=bye.headers.copy()), bsrc)

    peer = asyncio.create_task(answers_as_the_cancel_arrives())
    dial = asyncio.create_task(rig.ep.dial(f"sip:700@127.0.0.1:{uas.port}", ring_timeout=30))
    try:
        await asyncio.wait_for(invited.wait(), 3)
        await asyncio.sleep(0.05)  # the 180 is in
        dial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dial
        await asyncio.wait_for(peer, 5)
        assert rig.ep.active_calls == 0 and rig.ep.records[-1].end_reason == "cancelled"
    finally:
        peer.cancel()
        uas.close()
        rtp.close()


async def test_dial_busy(rig_factory: Any) -> None:
    uas = await SipPeer.open()
    rig = await rig_factory()

    async def busy() -> None:
        inv, src = await uas.request("INVITE", within_s=3)
        uas.send(Response(486, headers=inv.headers.copy()), src)
        await uas.request("ACK")

    task = asyncio.create_task(busy())
    with pytest.raises(DialFailed) as exc:
        await rig.ep.dial(f"sip:700@127.0.0.1:{uas.port}")
    assert (exc.value.reason, exc.value.status) == ("busy", 486)
    await asyncio.wait_for(task, 3)
    uas.close()


async def test_register_with_digest_and_refresh(rig_factory: Any) -> None:
    registrar = await SipPeer.open()
    seen: list[Request] = []

    async def serve() -> None:
        while True:
            req, src = await registrar.request("REGISTER", within_s=10)
            seen.append(req)
            h = req.headers.copy()
            h.set("to", (h.get("to") or "") + ";tag=reg")
            if not req.headers.get("authorization"):
                h.add("www-authenticate", f'Digest realm="pbx", nonce="n{len(seen)}", qop="auth"')
                registrar.send(Response(401, headers=h), src)
            else:
                assert digest.verify(req.headers.get("authorization") or "", password="pw", method="REGISTER")
                h.set("contact", (req.headers.get("contact") or "") + ";expires=10")
                registrar.send(Response(200, headers=h), src)

    task = asyncio.create_task(serve())
    rig = await rig_factory(registrations=[Registration(registrar=f"sip:127.0.0.1:{registrar.port}", user="900",
                                                        password="pw", domain="pbx.local", expires=60)])
    for _ in range(100):
        if rig.ep.registrations.get("sip:900@pbx.local", {}).get("registered"):
            break
        await asyncio.sleep(0.02)
    status = rig.ep.registrations["sip:900@pbx.local"]
    assert status["registered"] and status["expires"] == 10
    assert seen[0].headers.get("expires") == "60" and seen[0].call_id == seen[1].call_id
    assert seen[1].cseq[0] == seen[0].cseq[0] + 1
    await rig.ep.stop()
    assert seen[-1].headers.get("expires") == "0"  # unregistered on stop
    assert [refresh_delay(e) for e in (10, 60, 600, 3600)] == [5.0, 30.0, 300.0, 1800.0]
    task.cancel()
    registrar.close()


async def voiced_frames(rtp: RtpPeer, want: int, within_s: float = 2.0) -> list[bytes]:
    """The loud 20 ms frames `rtp` has received, polled until `want` came or `within_s` passed (the last frames
    may still be in flight on a loaded machine; a silent frame slipped in between is not counted)."""
    voiced: list[bytes] = []
    for _ in range(round(within_s / 0.05)):
        await asyncio.sleep(0.05)
        pcm = rtp.audio_pcm()
        voiced = [f for f in (pcm[i:i + 320] for i in range(0, len(pcm), 320)) if audioop.rms(f, 2) > 1000]
        if len(voiced) >= want:
            break
    return voiced


async def test_bridge_relays_audio_between_two_calls(rig_factory: Any) -> None:
    calls: list[Call] = []
    bridged = asyncio.Event()

    async def handler(call: Call) -> None:
        await call.answer()
        calls.append(call)
        if len(calls) == 2:
            await calls[0].bridge(calls[1])
            bridged.set()
        await call.ended.wait()

    rig = await rig_factory(handler)
    inv_a, ok_a = await rig.answered_call()
    rtp_a = rig.rtp
    rig.rtp = await RtpPeer.open()
    _inv_b, _ok_b = await rig.answered_call()
    await asyncio.sleep(0.1)
    media_a = ("127.0.0.1", int(ok_a.body.split(b"m=audio ")[1].split()[0]))
    rig.rtp.packets.clear()
    speech = tone(0.5, 600)
    try:
        await rtp_a.send_audio(speech, "PCMA", media_a)
        voiced = await voiced_frames(rig.rtp, len(speech))
        assert len(voiced) == len(speech)
        assert snr_db(b"".join(speech), b"".join(voiced)) > 25  # A's audio came out at B, whole and in order
        # a lone frame (a DTX phone's short spurt) reaches an empty queue: it is held one frame deep, then must
        # go out on its own rather than wait for a next packet that may never come
        await rtp_a.send_audio(speech[:1], "PCMA", media_a)
        assert len(await voiced_frames(rig.rtp, len(speech) + 1)) == len(speech) + 1, "the lone frame stayed in"
        rig.in_dialog("BYE", inv_a, ok_a, cseq=2)
        await asyncio.wait_for(bridged.wait(), 2)
    finally:
        rtp_a.close()


async def test_a_dtmf_flood_is_bounded_and_a_bridged_leg_still_hears_the_call(rig_factory: Any) -> None:
    """Thousands of RFC 4733 events: the digits taken are capped per second, every queue and the record stay
    bounded, and the other leg of a bridge gets audio between the relayed tones (DTMF went first on every tick)."""
    calls: list[Call] = []

    async def handler(call: Call) -> None:
        await call.answer()
        calls.append(call)
        if len(calls) == 2:
            await calls[0].bridge(calls[1])
        await call.ended.wait()

    rig = await rig_factory(handler)
    _inv_a, ok_a = await rig.answered_call()
    rtp_a = rig.rtp
    rig.rtp = await RtpPeer.open()
    await rig.answered_call()
    for _ in range(100):
        if len(calls) == 2 and calls[0].conference is not None:
            break
        await asyncio.sleep(0.02)
    media_a = ("127.0.0.1", int(ok_a.body.split(b"m=audio ")[1].split()[0]))
    a, b = calls
    assert a.rtp is not None and b.rtp is not None
    try:
        start = time.monotonic()
        for i in range(1500):  # each event as phones send it: 4 updates and 3 end packets
            rtp_a.send_dtmf("0123456789*#"[i % 12], media_a)
            if i % 10 == 9:
                await asyncio.sleep(0.002)  # within the socket's receive buffer: the endpoint reads them all
        await asyncio.sleep(0.5)
        elapsed = time.monotonic() - start
        taken = len(a.record.dtmf_received)  # (fewer than DTMF_RECORDED: all of them)
        assert a.dtmf_dropped > 0 and taken + a.dtmf_dropped <= 1500
        assert taken <= call_mod.DTMF_BURST + call_mod.DTMF_RATE * elapsed + 1  # the cap, however slow the machine
        assert a._dtmf.qsize() <= call_mod.DTMF_QUEUED
        assert len(b.rtp._dtmf_queue) <= DTMF_QUEUE
        # what B heard: the call's audio between two relayed events, which lie apart by the gap in stream time
        pkts = [r.pkt for r in rig.rtp.packets]
        starts = [i for i, p in enumerate(pkts) if p.pt == 101 and p.marker]
        assert len(starts) >= 2
        for first, second in itertools.pairwise(starts):
            apart = (pkts[second].timestamp - pkts[first].timestamp) & 0xFFFFFFFF
            assert apart >= (DTMF_TONE_TICKS + DTMF_END_PACKETS + DTMF_GAP_TICKS) * 160
            assert any(p.pt != 101 for p in pkts[first:second]) or b.rtp.stats.stalls  # (a stall skips ticks)
    finally:
        rtp_a.close()


async def test_ipv6_call(rig_factory: Any) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    ep = SipEndpoint(SipConfig(host="::1", port=0, rtp_port_min=42000, rtp_port_max=42999), answer_and_wait)
    await ep.start()
    sip, rtp = await SipPeer.open("::1"), await RtpPeer.open("::1")
    try:
        ruri = f"sip:900@[::1]:{ep.port}"
        text = sip.make("INVITE", ruri, body=offer_sdp(rtp.port, host="::1"))
        sip.send(text, ("::1", ep.port))
        ok = await sip.response(200, within_s=3)
        assert b"c=IN IP6 ::1" in ok.body and ok.headers.get("contact") == f"<sip:atiende@[::1]:{ep.port}>"
        inv = parse(text.encode())
        assert isinstance(inv, Request)
        sip.send(sip.make("ACK", ruri, call_id=inv.call_id, from_tag=inv.from_.tag, to_tag=ok.to.tag), ("::1", ep.port))
        await asyncio.sleep(0.3)
        assert rtp.packets and {r.pkt.pt for r in rtp.packets} == {8}
    finally:
        await ep.stop(grace_s=0.3)
        sip.close()
        rtp.close()


async def test_play_recuts_chunks_of_any_length(rig_factory: Any) -> None:
    pcm = b"".join(tone(0.5, 800))[:-100]  # 24.7 frames

    async def handler(call: Call) -> None:
        await call.answer()
        assert await call.play(pcm[i:i + 1000] for i in range(0, len(pcm), 1000))
        await call.hangup()

    rig = await rig_factory(handler)
    await rig.answered_call()
    await rig.sip.request("BYE", within_s=3)
    got = rig.rtp.audio_pcm()
    assert snr_db(pcm, got) > 30
    frames = [got[i:i + 320] for i in range(0, len(got), 320)]
    assert sum(1 for f in frames if audioop.rms(f, 2) > 1000) == 25  # 24 whole frames and the padded tail


async def test_sip_echo_command_echoes_and_prints_records(tmp_path: Any) -> None:
    import json
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "atiende"
    proc = await asyncio.create_subprocess_exec(
        str(exe), "sip-echo", "--sip", "127.0.0.1:0", "--rtp-ports", "42000-42999", "--mode", "echo",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    sip, rtp = await SipPeer.open(), await RtpPeer.open()
    try:
        ready = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert ready.startswith("ready sip:127.0.0.1:")
        port = int(ready.strip().rsplit(":", 1)[1])
        ruri = f"sip:echo@127.0.0.1:{port}"
        text = sip.make("INVITE", ruri, body=offer_sdp(rtp.port))
        sip.send(text, ("127.0.0.1", port))
        ok = await sip.response(200, within_s=5)
        inv = parse(text.encode())
        assert isinstance(inv, Request)
        sip.send(sip.make("ACK", ruri, call_id=inv.call_id, from_tag=inv.from_.tag, to_tag=ok.to.tag), ("127.0.0.1", port))
        media = ("127.0.0.1", int(ok.body.split(b"m=audio ")[1].split()[0]))
        said = tone(0.5, 500)
        await rtp.send_audio(said, "PCMA", media)
        voiced = await voiced_frames(rtp, len(said))
        assert len(voiced) == len(said) and snr_db(b"".join(said), b"".join(voiced)) > 25  # heard back, whole
        sip.send(sip.make("BYE", ruri, call_id=inv.call_id, from_tag=inv.from_.tag, to_tag=ok.to.tag, cseq=2),
                 ("127.0.0.1", port))
        await sip.response(200, method="BYE")
        record = json.loads(await asyncio.wait_for(proc.stdout.readline(), 5))
        assert record["end_reason"] == "remote_hangup" and record["codec"] == "PCMA" and record["packets_received"] == 25
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        sip.close()
        rtp.close()


async def test_a_node_that_is_not_ready_says_so_to_options_and_a_draining_one_refuses_new_calls(
        rig_factory: Callable[..., Awaitable[Rig]]) -> None:
    # Kamailio's dispatcher probes with OPTIONS: 503 takes the node out of rotation (its store is away, or it drains).
    rig = await rig_factory()
    ready = {"ok": False}
    accepting = {"ok": True}
    rig.ep.line.ready = lambda: ready["ok"]
    rig.ep.line.accepting = lambda: accepting["ok"]
    rig.sip.send(rig.sip.make("OPTIONS", rig.ruri), rig.addr)
    assert (await rig.sip.response(method="OPTIONS")).status == 503
    ready["ok"] = True
    rig.sip.send(rig.sip.make("OPTIONS", rig.ruri), rig.addr)
    assert (await rig.sip.response(method="OPTIONS")).status == 200
    accepting["ok"] = False  # draining: calls in progress go on, new ones go to another node
    rig.invite()
    refused = await rig.sip.response(method="INVITE")
    assert refused.status == 503 and refused.headers.get("retry-after")
