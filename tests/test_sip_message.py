"""SIP parsing, SDP offer/answer and digest: pure functions, no sockets."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telephony import sdp
from telephony.rtp import RtpError, RtpPacket
from telephony.sip import digest
from telephony.sip.message import Address, Request, Response, SipParseError, SipUri, Via, parse, validate_request

BASE = (
    "INVITE sip:900@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKabc;rport\r\n"
    "From: <sip:600@127.0.0.1>;tag=aa\r\n"
    "To: <sip:900@127.0.0.1>\r\n"
    "Call-ID: x1\r\n"
    "CSeq: 1 INVITE\r\n"
)


def req(text: str) -> Request:
    msg = parse(text.encode())
    assert isinstance(msg, Request)
    validate_request(msg)
    return msg


@pytest.mark.parametrize("where", ["content-length", "cseq", "port", "max-forwards", "expires", "contact"])
def test_hostile_numbers_are_parse_errors(where: str) -> None:
    """Past 4300 digits int() raises a plain ValueError: each such field must be a SipParseError (a 400)."""
    huge = "1" * 5000
    text = BASE + "Contact: <sip:600@127.0.0.1:5099>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    text = {
        "content-length": text.replace("Content-Length: 0", f"Content-Length: {huge}"),
        "cseq": text.replace("CSeq: 1 INVITE", f"CSeq: {huge} INVITE"),
        "port": text.replace("INVITE sip:900@127.0.0.1 SIP", f"INVITE sip:900@127.0.0.1:{huge} SIP"),
        "max-forwards": text.replace("Max-Forwards: 70", f"Max-Forwards: {huge}"),
        "expires": text.replace("Max-Forwards: 70", f"Max-Forwards: 70\r\nExpires: {huge}"),
        "contact": text.replace("<sip:600@127.0.0.1:5099>", f"<sip:600@127.0.0.1:5099>;expires={huge}"),
    }[where]
    with pytest.raises(SipParseError):
        req(text)


def test_compact_and_case_insensitive_names() -> None:
    m = req("OPTIONS sip:900@h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@h>;tag=1\r\nt: sip:900@h\r\n"
            "i: cid\r\ncSeQ: 5 OPTIONS\r\nl: 0\r\n\r\n")
    assert m.call_id == "cid" and m.cseq == (5, "OPTIONS") and m.from_.tag == "1" and m.to.uri.user == "900"


def test_no_space_after_colon_empty_header_and_folding() -> None:
    m = req(BASE + "Subject:\r\nMax-Forwards:70\r\nX-Long: first\r\n  second\r\n\tthird\r\nContent-Length:0\r\n\r\n")
    assert m.headers.get("subject") == ""
    assert m.headers.get("max-forwards") == "70"
    assert m.headers.get("x-long") == "first second third"


def test_multi_values_split_into_entries() -> None:
    m = req(BASE + "Via: SIP/2.0/UDP p1;branch=z9hG4bK2, SIP/2.0/UDP p2;branch=z9hG4bK3\r\n"
            'Contact: "A, B" <sip:a@h>, <sip:b@h>\r\nRecord-Route: <sip:r1;lr>,<sip:r2;lr>\r\n\r\n')
    assert [v.host for v in m.vias] == ["127.0.0.1", "p1", "p2"]
    assert len(m.headers.get_all("contact")) == 2
    assert Address.parse(m.headers.get_all("contact")[0]).display == "A, B"
    assert m.headers.get_all("record-route") == ["<sip:r1;lr>", "<sip:r2;lr>"]


def test_bare_lf_and_body_by_content_length() -> None:
    m = parse((BASE.replace("\r\n", "\n") + "Content-Length: 4\n\nbodyEXTRA").encode())
    assert m.body == b"body"


@pytest.mark.parametrize("drop", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_is_400(drop: str) -> None:
    text = "\r\n".join(line for line in BASE.split("\r\n") if not line.startswith(drop + ":")) + "\r\n"
    with pytest.raises(SipParseError) as exc:
        req(text)
    assert exc.value.status == 400


def test_strict_checks() -> None:
    for bad, status in [
        (BASE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE") + "\r\n", 400),
        (BASE + "Call-ID: again\r\n\r\n", 400),
        (BASE + "Content-Length: 99\r\n\r\nshort", 400),
        (BASE + "Content-Length: -1\r\n\r\n", 400),
        (BASE + "Max-Forwards: 300\r\n\r\n", 400),
        (BASE.replace("SIP/2.0\r\n", "SIP/3.0\r\n", 1) + "\r\n", 505),
        (BASE.replace("sip:900@127.0.0.1 SIP", "http://x SIP", 1) + "\r\n", 416),
        (BASE + "Bad Header: x\r\n\r\n", 400),
    ]:
        with pytest.raises(SipParseError) as exc:
            req(bad)
        assert exc.value.status == status, bad


def test_uri_address_via() -> None:
    u = SipUri.parse("sip:user;par=u%40example.net@example.com:5070;transport=udp;lr")
    assert (u.user, u.host, u.port, u.params) == ("user;par=u%40example.net", "example.com", 5070,
                                                  {"transport": "udp", "lr": None})
    assert SipUri.parse("sip:[2001:db8::1]:5062").hostport == ("2001:db8::1", 5062)
    a = Address.parse('"Quoted \\"x\\"" <sip:a@b> ; tag = 12 ; q=0.5')
    assert (a.display, a.tag, a.params["q"]) == ('Quoted "x"', "12", "0.5")
    v = Via.parse("SIP  /  2.0 / UDP  host.example.com : 5070 ; branch = z9hG4bKx ; rport")
    assert (v.transport, v.host, v.port, v.branch, v.params["rport"]) == ("UDP", "host.example.com", 5070, "z9hG4bKx", None)
    with pytest.raises(SipParseError):
        Address.parse('"unterminated <sip:a@b>')
    with pytest.raises(SipParseError):
        Address.parse("< sip:a@b >")


def test_serialise_roundtrip() -> None:
    m = req(BASE + "Content-Type: application/sdp\r\nContent-Length: 3\r\n\r\nabc")
    again = parse(m.to_bytes())
    assert isinstance(again, Request) and again.body == b"abc" and again.call_id == "x1"
    r = parse(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\n\r\n")
    assert isinstance(r, Response) and r.status == 180


OFFER = ("v=0\r\no=x 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
         "m=audio 4000 RTP/AVP 0 8 96 9\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n"
         "m=video 5000 RTP/AVP 31\r\n")


def test_sdp_answer_uses_our_order_and_their_payload_types() -> None:
    offer = sdp.parse(OFFER)
    neg = sdp.negotiate(offer, ["PCMA", "PCMU"])
    assert neg is not None and (neg.codec, neg.pt, neg.dtmf_pt, neg.remote) == ("PCMA", 8, 96, ("192.0.2.9", 4000))
    ans = sdp.parse(sdp.answer(offer, neg, address="127.0.0.1", port=30000, session_id=5, version=0))
    audio = ans.audio
    assert audio is not None and audio.formats == ["8", "96"] and audio.ptime == 20
    assert [m.port for m in ans.media] == [30000, 0]  # the video stream is refused, not dropped
    assert sdp.negotiate(offer, ["PCMU"]) is not None and sdp.negotiate(offer, ["PCMU"]).codec == "PCMU"  # type: ignore[union-attr]


def test_sdp_no_common_codec_hold_and_ipv6() -> None:
    g722 = sdp.parse(OFFER.replace("0 8 96 9", "9 96"))
    assert sdp.negotiate(g722, ["PCMA", "PCMU"]) is None
    hold = sdp.parse(OFFER + "a=sendonly\r\n")
    assert sdp.negotiate(sdp.parse(OFFER.replace("m=video 5000 RTP/AVP 31\r\n", "a=sendonly\r\n")),
                         ["PCMA"]).direction == "recvonly"  # type: ignore[union-attr]
    assert hold.audio is not None
    body = sdp.build(address="::1", port=30002, codecs=["PCMA", "PCMU"], session_id=1, version=0)
    assert b"c=IN IP6 ::1" in body and b"m=audio 30002 RTP/AVP 8 0 101" in body
    with pytest.raises(sdp.SdpError):
        sdp.parse("nonsense")


def test_digest_qop_auth_matches_rfc2617_formula() -> None:
    ch = 'Digest realm="atiende", nonce="abc123", qop="auth,auth-int", algorithm=MD5, opaque="op"'
    value = digest.authorization(ch, user="900", password="secret", method="REGISTER", uri="sip:127.0.0.1")
    p = digest.parse_challenge(value)

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1, ha2 = md5("900:atiende:secret"), md5("REGISTER:sip:127.0.0.1")
    assert p["response"] == md5(f"{ha1}:abc123:{p['nc']}:{p['cnonce']}:auth:{ha2}")
    assert p["qop"] == "auth" and p["opaque"] == "op"
    assert digest.verify(value, password="secret", method="REGISTER")
    assert not digest.verify(value, password="wrong", method="REGISTER")
    plain = digest.authorization('Digest realm="r", nonce="n"', user="u", password="p", method="INVITE", uri="sip:x")
    assert digest.parse_challenge(plain)["response"] == md5(f"{md5('u:r:p')}:n:{md5('INVITE:sip:x')}")


VALID_INVITE = (BASE + "Contact: <sip:600@127.0.0.1:5099>\r\nContent-Type: application/sdp\r\n"
                f"Content-Length: {len(OFFER)}\r\n\r\n{OFFER}").encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mangled_messages_fail_cleanly(data: st.DataObject) -> None:
    """Whatever arrives, the reader raises SipParseError/SdpError/RtpError or returns a message; nothing else."""
    raw = bytearray(VALID_INVITE)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[i:i + data.draw(st.integers(1, 40))]
        elif op == "insert":
            raw[i:i] = data.draw(st.sampled_from([b"\r\n", b" ", b":", b";", b",", b"<", b'"', b"\xb2", b"\x00", b"=", b"@"]))
        else:
            raw[i:i] = raw[i:i + data.draw(st.integers(1, 30))]
    try:
        msg = parse(bytes(raw))
        if isinstance(msg, Request):
            validate_request(msg)
            if msg.body:
                offer = sdp.parse(msg.body)
                if offer.audio is not None:
                    sdp.negotiate(offer, ["PCMA", "PCMU"])
    except (SipParseError, sdp.SdpError):
        pass
    try:
        RtpPacket.parse(bytes(raw[:200]))
    except RtpError:
        pass
