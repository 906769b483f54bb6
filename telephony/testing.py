"""Raw SIP and RTP peers for tests and benches: real UDP sockets, hand-written messages, no mocks.

    peer = await SipPeer.open()
    peer.send(peer.request("OPTIONS", "sip:atiende@127.0.0.1:5070"), ("127.0.0.1", 5070))
    resp = await peer.response(200)

`tone()` makes a test signal; `snr_db()` compares what came back with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import struct
import time
from dataclasses import dataclass

from core import audio
from telephony import g711
from telephony.rtp import RtpPacket
from telephony.sip.message import Request, Response, new_branch, new_token, parse


class SipPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[Request | Response, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.raw: list[bytes] = []

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0) -> SipPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=(host, port))
        peer.transport = transport
        peer.host, peer.port = transport.get_extra_info("sockname")[:2]
        return peer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.raw.append(data)
        with contextlib.suppress(Exception):
            self.inbox.put_nowait((parse(data), addr))

    def send(self, data: bytes | str | Request | Response, addr: tuple[str, int]) -> None:
        if isinstance(data, Request | Response):
            data = data.to_bytes()
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport:
            self.transport.close()

    async def next(self, within_s: float = 2.0) -> tuple[Request | Response, tuple[str, int]]:
        return await asyncio.wait_for(self.inbox.get(), within_s)

    async def response(self, status: int | None = None, within_s: float = 2.0, method: str | None = None) -> Response:
        """The next response (skipping 1xx unless asked for, and skipping requests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            msg, _ = await self.next(max(0.01, deadline - loop.time()))
            if not isinstance(msg, Response):
                continue
            if method and msg.cseq[1] != method:
                continue
            if msg.status == status or (status is None and msg.status >= 200):
                return msg
            if msg.status >= 200:
                raise AssertionError(f"expected {status}, got {msg.status} {msg.reason}")

    async def request(self, method: str, within_s: float = 2.0) -> tuple[Request, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            msg, addr = await self.next(max(0.01, deadline - loop.time()))
            if isinstance(msg, Request) and msg.method == method:
                return msg, addr

    async def quiet(self, within_s: float = 0.3) -> list[Request | Response]:
        """Everything that arrives in the next `within_s` seconds."""
        out: list[Request | Response] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while True:
                    out.append((await self.inbox.get())[0])
        return out

    def via(self, branch: str | None = None, rport: bool = True) -> str:
        return f"SIP/2.0/UDP {self.hostref}:{self.port};branch={branch or new_branch()}{';rport' if rport else ''}"

    @property
    def hostref(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def make(self, method: str, ruri: str, *, call_id: str | None = None, from_tag: str | None = None,
             to_tag: str | None = None, cseq: int = 1, branch: str | None = None, body: bytes | str = b"",
             content_type: str = "application/sdp", extra: str = "", user: str = "600100200") -> str:
        """A request as text, CRLF line ends, Content-Length filled in."""
        if isinstance(body, str):
            body = body.encode()
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: {self.via(branch)}",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{self.hostref}>;tag={from_tag or new_token()}",
            f"To: <{ruri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id or new_token(16)}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{user}@{self.hostref}:{self.port}>",
        ]
        if extra:
            lines += [x for x in extra.strip("\r\n").replace("\r\n", "\n").split("\n") if x]
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        return "\r\n".join(lines) + "\r\n\r\n" + body.decode("utf-8", "surrogateescape")


def offer_sdp(port: int, pts: str = "8 0 101", host: str = "127.0.0.1", direction: str = "sendrecv") -> str:
    names = {"0": "PCMU/8000", "8": "PCMA/8000", "9": "G722/8000", "18": "G729/8000", "101": "telephone-event/8000",
             "111": "opus/48000/2"}
    ip = "IP6" if ":" in host else "IP4"
    lines = ["v=0", f"o=peer 1 1 IN {ip} {host}", "s=peer", f"c=IN {ip} {host}", "t=0 0", f"m=audio {port} RTP/AVP {pts}"]
    lines += [f"a=rtpmap:{pt} {names[pt]}" for pt in pts.split() if pt in names]
    if "101" in pts.split():
        lines.append("a=fmtp:101 0-16")
    lines += ["a=ptime:20", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Received:
    at: float
    pkt: RtpPacket


class RtpPeer(asyncio.DatagramProtocol):
    """Receives RTP with arrival times; sends frames or RFC 4733 events."""

    def __init__(self) -> None:
        self.packets: list[Received] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.sources: set[tuple[str, int]] = set()

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> RtpPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=(host, 0))
        peer.transport = transport
        peer.port = transport.get_extra_info("sockname")[1]
        return peer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sources.add((addr[0], addr[1]))
        with contextlib.suppress(Exception):
            self.packets.append(Received(time.monotonic(), RtpPacket.parse(data)))

    def close(self) -> None:
        if self.transport:
            self.transport.close()

    def send_packet(self, pt: int, payload: bytes, addr: tuple[str, int], *, ts: int | None = None,
                    marker: bool = False, seq: int | None = None) -> None:
        assert self.transport is not None
        pkt = RtpPacket(pt, self.seq if seq is None else seq, self.ts if ts is None else ts, self.ssrc, payload, marker)
        if seq is None:
            self.seq = (self.seq + 1) & 0xFFFF
        self.transport.sendto(pkt.to_bytes(), addr)

    async def send_audio(self, frames: list[bytes], codec: str, addr: tuple[str, int]) -> None:
        pt = g711.PAYLOAD_TYPES[codec]
        for f in frames:
            self.send_packet(pt, g711.encode(codec, f), addr)
            self.ts = (self.ts + 160) & 0xFFFFFFFF
            await asyncio.sleep(0.02)

    def send_dtmf(self, digit: str, addr: tuple[str, int], pt: int = 101) -> None:
        """One RFC 4733 event the way phones send it: updates, then the end packet three times."""
        event = "0123456789*#ABCD".index(digit)
        for i in range(1, 5):
            self.send_packet(pt, struct.pack("!BBH", event, 10, i * 160), addr, marker=i == 1)
        for _ in range(3):
            self.send_packet(pt, struct.pack("!BBH", event, 0x80 | 10, 800), addr)
        self.ts = (self.ts + 960) & 0xFFFFFFFF

    def audio_pcm(self, pt: int | None = None) -> bytes:
        """Received audio in arrival order (loopback does not reorder), decoded by its payload type."""
        pkts = [r.pkt for r in self.packets if pt is None or r.pkt.pt == pt]
        out = bytearray()
        for p in pkts:
            if p.pt in (0, 8):
                out += g711.decode("PCMU" if p.pt == 0 else "PCMA", p.payload)
        return bytes(out)


def tone(seconds: float, freq: float = 440.0, amplitude: int = 8000) -> list[bytes]:
    n = int(seconds * 8000)
    samples = [int(amplitude * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)]
    pcm = struct.pack(f"<{n}h", *samples)
    return [pcm[i:i + audio.FRAME_BYTES] for i in range(0, len(pcm), audio.FRAME_BYTES)]


def snr_db(reference: bytes, received: bytes) -> float:
    """SNR of `received` against `reference` after aligning on the best lag (within 0.5 s)."""
    import numpy as np

    ref = np.frombuffer(reference, dtype="<i2").astype(np.float64)
    got = np.frombuffer(received, dtype="<i2").astype(np.float64)
    best = -100.0
    for lag in range(0, len(got), audio.FRAME_SAMPLES):  # frames are sent whole: the lag is a frame multiple
        n = min(len(ref), len(got) - lag)
        if n < 800:
            break
        noise = got[lag:lag + n] - ref[:n]
        p_noise = float(np.mean(noise**2)) or 1e-9
        best = max(best, 10 * math.log10(float(np.mean(ref[:n] ** 2)) / p_noise))
    return best
