"""SDP offer/answer for one audio stream (RFC 4566, RFC 3264): G.711 both laws and telephone-event.

The answer carries exactly one audio codec, chosen in *our* configured order (A-law first by
default, the norm on Spanish networks), plus telephone-event when offered, so both directions
use the same law. Other media lines are rejected with port 0, as RFC 3264 requires.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from telephony.g711 import PAYLOAD_TYPES
from telephony.sip.message import is_num

STATIC_NAMES = {0: "PCMU", 8: "PCMA"}
DTMF_PT = 101


class SdpError(ValueError):
    pass


def _int(text: str, hi: int, what: str) -> int:
    """A decimal field of at most `hi`. The length is checked before int(): past 4300 digits int() raises a plain
    ValueError (not SdpError), which escaped every handler and left the INVITE's transaction unanswered."""
    if not is_num(text) or len(text) > 10 or int(text) > hi:
        raise SdpError(f"bad {what} {text[:20]!r}")
    return int(text)


def _is_rtp(proto: str) -> bool:
    return proto.upper().startswith("RTP/")


@dataclass
class MediaLine:
    kind: str
    port: int
    proto: str
    formats: list[str]
    rtpmap: dict[int, str] = field(default_factory=dict)  # pt -> "PCMA/8000"
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str | None = None
    address: str | None = None
    ptime: int | None = None
    raw_lines: list[str] = field(default_factory=list)


@dataclass
class Sdp:
    origin: str = ""
    session_address: str | None = None
    direction: str = "sendrecv"
    media: list[MediaLine] = field(default_factory=list)

    @property
    def audio(self) -> MediaLine | None:
        return next((m for m in self.media if m.kind == "audio" and m.port != 0), None)

    def audio_address(self) -> tuple[str, int] | None:
        m = self.audio
        if m is None:
            return None
        addr = m.address or self.session_address
        if not addr:
            raise SdpError("no connection address")
        try:
            ipaddress.ip_address(addr)
        except ValueError:  # a name would mean a blocking DNS lookup on the media path
            raise SdpError(f"connection address must be an IP address, not {addr!r}") from None
        return addr, m.port

    def audio_direction(self) -> str:
        m = self.audio
        d = (m.direction if m and m.direction else None) or self.direction
        addr = (m.address if m else None) or self.session_address
        if addr in ("0.0.0.0", "::"):  # RFC 2543 hold
            return "inactive" if d == "inactive" else "sendonly" if d in ("sendrecv", "sendonly") else d
        return d


def parse(body: bytes | str) -> Sdp:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    sdp = Sdp()
    cur: MediaLine | None = None
    seen_v = False
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line {line[:30]!r}")
        k, v = line[0], line[2:]
        if k == "v":
            seen_v = True
        elif k == "o":
            sdp.origin = v
        elif k == "c":
            parts = v.split()
            if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
                raise SdpError(f"bad c= line {v!r}")
            addr = parts[2].split("/")[0]
            if cur is None:
                sdp.session_address = addr
            else:
                cur.address = addr
        elif k == "m":
            parts = v.split()
            if len(parts) < 4:
                raise SdpError(f"bad m= line {v[:40]!r}")
            cur = MediaLine(kind=parts[0], port=_int(parts[1].split("/")[0], 65535, "port"), proto=parts[2],
                            formats=parts[3:])
            if _is_rtp(cur.proto):  # RTP formats are payload types (RFC 3551): 0-127
                for f in cur.formats:
                    if f.isdigit():
                        _int(f, 127, "payload type")
            sdp.media.append(cur)
        elif k == "a":
            name, _, val = v.partition(":")
            if name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                if cur is None:
                    sdp.direction = name
                else:
                    cur.direction = name
            elif cur is not None and name == "rtpmap":
                pt, _, enc = val.partition(" ")
                if pt.isdigit():  # (any digits: too many of them is a refusal, not a line to skip)
                    cur.rtpmap[_int(pt, 127, "payload type")] = enc.strip()
            elif cur is not None and name == "fmtp":
                pt, _, params = val.partition(" ")
                if pt.isdigit():
                    cur.fmtp[_int(pt, 127, "payload type")] = params.strip()
            elif cur is not None and name == "ptime" and val.strip().isdigit():
                cur.ptime = _int(val.strip(), 10000, "ptime")
        if cur is not None and k != "m":
            cur.raw_lines.append(line)
    if not seen_v:
        raise SdpError("not an SDP body (no v= line)")
    return sdp


def codec_of(m: MediaLine, pt: int) -> str | None:
    enc = m.rtpmap.get(pt)
    if enc:
        name, _, rate = enc.partition("/")
        return name.upper() + ("/" + rate.split("/")[0] if rate else "")
    return {0: "PCMU/8000", 8: "PCMA/8000"}.get(pt)


@dataclass
class Negotiated:
    codec: str  # PCMA or PCMU
    pt: int
    dtmf_pt: int | None
    remote: tuple[str, int]
    direction: str  # our direction: sendrecv, sendonly, recvonly, inactive


def negotiate(offer: Sdp, codecs: list[str], prefer: str | None = None) -> Negotiated | None:
    """Choose our codec from an offer; `prefer` keeps the current codec on a re-offer. None: nothing in common.
    SdpError for what parse() would have refused (an Sdp built by hand) or an unusable connection address."""
    m = offer.audio
    if m is None or "RTP/AVP" not in m.proto.upper():
        return None
    offered: dict[str, int] = {}
    dtmf_pt: int | None = None
    for f in m.formats:
        if not is_num(f):
            continue
        pt = _int(f, 127, "payload type")
        c = codec_of(m, pt)
        if c is None:
            continue
        name, _, rate = c.partition("/")
        if name in PAYLOAD_TYPES and rate in ("8000", "") and name not in offered:
            offered[name] = pt
        elif name == "TELEPHONE-EVENT" and rate in ("8000", "") and dtmf_pt is None:
            dtmf_pt = pt
    order = ([prefer] if prefer else []) + list(codecs)
    chosen = next((c for c in order if c in offered), None)
    if chosen is None:
        return None
    addr = offer.audio_address()
    assert addr is not None
    their = offer.audio_direction()
    ours = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}.get(their, "sendrecv")
    return Negotiated(codec=chosen, pt=offered[chosen], dtmf_pt=dtmf_pt, remote=addr, direction=ours)


def build(*, address: str, port: int, codecs: list[str], session_id: int, version: int, dtmf_pt: int | None = DTMF_PT,
          pts: dict[str, int] | None = None, direction: str = "sendrecv", other_media: list[MediaLine] | None = None,
          user_agent: str = "Atiende") -> bytes:
    """An offer (several codecs) or an answer (one codec, payload types mirrored from the offer via `pts`)."""
    ip = "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    pt_of = {c: (pts or {}).get(c, PAYLOAD_TYPES[c]) for c in codecs}
    fmts = [str(pt_of[c]) for c in codecs] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    lines = [
        "v=0",
        f"o={user_agent} {session_id} {version} IN {ip} {address}",
        f"s={user_agent}",
        f"c=IN {ip} {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(fmts)}",
    ]
    lines += [f"a=rtpmap:{pt_of[c]} {c}/8000" for c in codecs]
    if dtmf_pt is not None:
        lines += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-16"]
    lines += ["a=ptime:20", f"a={direction}"]
    for m in other_media or []:
        lines.append(f"m={m.kind} 0 {m.proto} {' '.join(m.formats)}")
    return ("\r\n".join(lines) + "\r\n").encode()


def answer(offer: Sdp, neg: Negotiated, *, address: str, port: int, session_id: int, version: int,
           user_agent: str = "Atiende") -> bytes:
    others = [m for m in offer.media if m is not offer.audio]
    return build(address=address, port=port, codecs=[neg.codec], pts={neg.codec: neg.pt}, dtmf_pt=neg.dtmf_pt,
                 session_id=session_id, version=version, direction=neg.direction, other_media=others,
                 user_agent=user_agent)


def negotiate_answer(ans: Sdp, codecs: list[str]) -> Negotiated | None:
    """Read the answer to our offer: the answerer's first codec among ours wins. SdpError as for negotiate()."""
    m = ans.audio
    if m is None:
        return None
    names = [(codec_of(m, _int(f, 127, "payload type")) or "").split("/")[0] for f in m.formats if is_num(f)]
    first = next((n for n in names if n in codecs), None)
    return negotiate(ans, codecs, prefer=first) if first else None
