"""RTP for one call: packets (RFC 3550), a small jitter buffer, RFC 4733 DTMF, and a paced sender.

One `RtpSession` per call owns one UDP socket from the configured port range and exactly one
sender task. A re-INVITE or UPDATE calls `update()` on the same session, so a session refresh
can never start a second sender (pyVoIP starts one more thread per re-INVITE).

Pacing: packets leave on an absolute 20 ms grid of the loop's monotonic clock (`k * 20 ms`), so
the rate never drifts the way relative `sleep(0.02)` loops do, and every call of the process
shares the grid: one loop wake-up sends a packet for each call, which matters with the GIL
(a CPU-bound thread makes each wake-up wait for the interpreter; one wake-up per call per
20 ms collapses under that, measured in bench/bench_rtp_pacing.py). If the loop stalls for a
packet time or more (GC pause, CPU starvation), the sender re-anchors on the next grid point
and the RTP timestamp jumps by the missed time: the stream shows a gap, never a burst.
Priorities on each tick: DTMF events first, then queued audio, then silence, so a DTMF digit or
a hangup (which cancels the task) never waits behind queued prompt audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import math
import random
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from core import audio
from telephony import g711

log = logging.getLogger(__name__)

PTIME = 0.020
TS_STEP = audio.FRAME_SAMPLES
DTMF_EVENTS = "0123456789*#ABCD"
DTMF_TONE_TICKS = 5  # 100 ms of tone, then three end packets
DTMF_END_PACKETS = 3
DTMF_GAP_TICKS = 5  # at least 100 ms of audio between two events we send: a burst of relayed digits leaves the
# far end hearing the call between its tones, not tones alone
DTMF_QUEUE = 32  # digits waiting to be sent; past it (a flood relayed from the other leg of a bridge) they are dropped
# Symmetric RTP latches to the first source that sends after start/update(); from then on another source is
# dropped (its audio and digits never reach the call: anyone who guesses the port could otherwise take the call
# over with one packet). A NAT rebinding still works: once the latched source has been silent this long, a new
# source that sends this many packets in a row takes over.
RELATCH_SILENCE_S = 1.5
RELATCH_PACKETS = 5


# Set False to send through the asyncio transport only (bench comparison).
FAST_SEND = True


def _load_sendto() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.PyDLL(None).sendto
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    fn.restype = ctypes.c_ssize_t
    return fn


_c_sendto = _load_sendto()


def _sockaddr(host: str, port: int) -> bytes | None:
    """struct sockaddr_in / sockaddr_in6 (Linux layout) for an IP literal; None for anything else."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if ip.version == 4:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + ip.packed + b"\0" * 8
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + ip.packed + struct.pack("=I", 0)


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Sleep to an exact loop time: timers with equal `when` all fire in the same loop iteration."""
    fut = loop.create_future()
    handle = loop.call_at(when, _wake, fut)
    try:
        await fut
    finally:
        handle.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class RtpError(ValueError):
    pass


@dataclass
class RtpPacket:
    pt: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise RtpError("short RTP packet")
        b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
        if b0 >> 6 != 2:
            raise RtpError("not RTP version 2")
        offset = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension
            if len(data) < offset + 4:
                raise RtpError("truncated RTP extension")
            (words,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4 + 4 * words
        end = len(data)
        if b0 & 0x20:  # padding
            end -= data[-1]
        if offset > end:
            raise RtpError("truncated RTP packet")
        return cls(pt=b1 & 0x7F, seq=seq, timestamp=ts, ssrc=ssrc, payload=data[offset:end], marker=bool(b1 & 0x80))

    def to_bytes(self) -> bytes:
        return struct.pack("!BBHII", 0x80, (0x80 if self.marker else 0) | self.pt, self.seq & 0xFFFF,
                           self.timestamp & 0xFFFFFFFF, self.ssrc) + self.payload


class JitterBuffer:
    """Reorders by extended sequence number, drops duplicates and late packets, gives up on a gap
    once `depth` later packets are waiting. In-order packets pass straight through (no added delay)."""

    def __init__(self, depth: int = 3) -> None:
        self.depth = depth
        self.buf: dict[int, RtpPacket] = {}
        self.next: int | None = None
        self.max_ext: int | None = None
        self.first_ext: int | None = None
        self.unique = 0
        self.duplicates = 0
        self.late = 0
        self.concealed = 0

    def extend(self, seq: int) -> int:
        if self.max_ext is None:
            self.max_ext = self.first_ext = seq
            return seq
        cand = (self.max_ext & ~0xFFFF) | seq
        if cand - self.max_ext > 0x8000:
            cand -= 0x10000
        elif self.max_ext - cand > 0x8000:
            cand += 0x10000
        self.max_ext = max(self.max_ext, cand)
        return cand

    def push(self, pkt: RtpPacket) -> list[RtpPacket | None]:
        """Packets ready in order; None stands for a lost packet (the caller conceals it)."""
        ext = self.extend(pkt.seq)
        if self.next is None:
            self.next = ext
        if ext in self.buf:
            self.duplicates += 1
            return []
        if ext < self.next:
            if self.next - ext <= 64:
                self.duplicates += 1  # already played: a duplicate or too late to matter
            else:  # the sender restarted its sequence
                self.buf.clear()
                self.next = ext
                self.unique += 1
                self.buf[ext] = pkt
                return self._drain()
            return []
        if ext - self.next > 1000:  # far jump: resynchronise rather than conceal seconds
            self.buf.clear()
            self.next = ext
        self.unique += 1
        self.buf[ext] = pkt
        return self._drain()

    def _drain(self) -> list[RtpPacket | None]:
        out: list[RtpPacket | None] = []
        assert self.next is not None
        while True:
            while self.next in self.buf:
                out.append(self.buf.pop(self.next))
                self.next += 1
            if len(self.buf) < self.depth:
                return out
            first = min(self.buf)
            gap = first - self.next
            self.concealed += gap
            out.extend([None] * min(gap, self.depth))
            self.next = first

    @property
    def lost(self) -> int:
        if self.max_ext is None or self.first_ext is None:
            return 0
        return max(0, self.max_ext - self.first_ext + 1 - self.unique)


class DtmfReceiver:
    """RFC 4733: one digit per event, whatever the number of updates and retransmitted end packets.

    An event is keyed by its RTP timestamp, and a new event starts after the previous one (RFC 4733 2.5.1.3), so
    only a timestamp beyond the last event's (modulo 2**32) opens a digit. A memory of recent timestamps (it was
    the last 16) let any older event through again once it had dropped out: a replayed or cycling stream became
    a digit per packet."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._ssrc: int | None = None

    def feed(self, pkt: RtpPacket) -> str | None:
        if len(pkt.payload) < 4:
            return None
        event = pkt.payload[0]
        if event >= len(DTMF_EVENTS):
            return None
        if pkt.ssrc != self._ssrc:  # a new sender (restarted, re-latched) counts from its own timestamp base
            self._ssrc, self._last = pkt.ssrc, None
        if self._last is not None and not 0 < (pkt.timestamp - self._last) & 0xFFFFFFFF < 0x80000000:
            return None
        self._last = pkt.timestamp
        return DTMF_EVENTS[event]


def dtmf_payload(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)


@dataclass
class RtpStats:
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    jitter_ms: float = 0.0
    stalls: int = 0
    skipped_ticks: int = 0
    dtmf_sent: int = 0


@dataclass
class MediaParams:
    codec: str
    pt: int
    dtmf_pt: int | None
    remote: tuple[str, int]
    direction: str = "sendrecv"
    extra: dict[str, str] = field(default_factory=dict)


class RtpSession(asyncio.DatagramProtocol):
    def __init__(self, params: MediaParams, *, media_timeout: float | None = None,
                 on_dtmf: Callable[[str], None] | None = None, on_timeout: Callable[[], None] | None = None,
                 rx_frames: int = 50, tx_frames: int = 3, verified: bool = True) -> None:
        self.params = params
        self.media_timeout = media_timeout
        self.on_dtmf = on_dtmf
        self.on_timeout = on_timeout
        self.stats = RtpStats()
        self.jitter = JitterBuffer()
        self.dtmf_rx = DtmfReceiver()
        self.frames_in: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=rx_frames)
        self.frames_out: asyncio.Queue[bytes] = asyncio.Queue(maxsize=tx_frames)
        self.drained = asyncio.Event()
        self.exited = asyncio.Event()
        self.local_port = 0
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts_base = random.getrandbits(32)
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._signalled = params.remote  # the address the SDP named (params.remote becomes the latched one)
        self._source: tuple[str, int] | None = None  # the latched source; None: the next sender is latched
        self._source_rx = 0.0  # when the latched source last sent
        self._candidate: tuple[str, int, int] | None = None  # another source (address, SSRC) wanting to take over
        self._candidate_run = 0  # its packets in a row
        self.foreign_dropped = 0  # packets from sources other than the latched one, dropped
        self._dtmf_queue: deque[str] = deque()  # at most DTMF_QUEUE
        self._dtmf_cur: tuple[int, int, int] | None = None  # (event, start tick, ticks sent)
        self._dtmf_next = 0  # the first tick at which the next event may start (DTMF_GAP_TICKS after the last)
        self._dtmf_dropped = 0
        self._transit: float | None = None
        self._last_rx = 0.0
        self._marker = True
        self._timed_out = False
        self._sockaddr_for: tuple[str, int] | None = None
        self._sockaddr: bytes | None = None
        self._fd = -1
        # An unverified session (the endpoint's inbound calls) sends nothing until the remote address is known to
        # want it: the caller's ACK arrived, or RTP came from that address (latched below). Otherwise one unanswered
        # INVITE naming someone else's address in its SDP would aim our stream at them (amplification).
        self.verified = verified

    # ---- socket ---------------------------------------------------------------------------

    async def open(self, host: str, port_min: int, port_max: int, attempts: int = 64) -> int:
        loop = asyncio.get_running_loop()
        evens = list(range(port_min + (port_min & 1), port_max, 2)) or [port_min]
        start = random.randrange(len(evens))
        for i in range(min(attempts, len(evens))):
            port = evens[(start + i) % len(evens)]
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
            except OSError:
                continue
            self._transport = transport
            self.local_port = port
            return port
        raise OSError(f"no free RTP port in {port_min}-{port_max}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._closed or len(data) < 12 or 72 <= (data[1] & 0x7F) <= 76:  # RTCP multiplexed: ignored
            return
        try:
            pkt = RtpPacket.parse(data)
        except RtpError:
            return
        p = self.params
        if pkt.pt not in (p.pt, p.dtmf_pt):
            return
        loop_time = asyncio.get_running_loop().time()
        source = (addr[0], addr[1])
        if source != self._source and not self._admit(source, pkt.ssrc, loop_time):
            self.foreign_dropped += 1
            return
        self._last_rx = self._source_rx = loop_time
        self.stats.received += 1
        if pkt.pt == p.dtmf_pt:
            digit = self.dtmf_rx.feed(pkt)  # at once, not after reordering: a digit should stop a prompt now
            if digit and self.on_dtmf:
                self.on_dtmf(digit)
        else:
            transit = loop_time * 8000 - pkt.timestamp
            if self._transit is not None:
                d = abs(transit - self._transit)
                if d < 8000 * 10:  # ignore timestamp jumps (sender stalls, resets)
                    self.stats.jitter_ms += (d / 8 - self.stats.jitter_ms) / 16
            self._transit = transit
        # events share the audio's sequence space: they go through the buffer too, or they would count as lost
        for item in self.jitter.push(pkt):
            if item is not None and item.pt != p.pt:
                continue
            frame = audio.SILENCE if item is None else g711.fit_frame(g711.decode(p.codec, item.payload))
            audio.put_dropping_oldest(self.frames_in, frame)  # nobody is listening: keep the newest second

    def _admit(self, source: tuple[str, int], ssrc: int, now: float) -> bool:
        """Whether a packet from a source other than the latched one is taken, latching to it if so."""
        if self._source is not None:
            if now - self._source_rx < RELATCH_SILENCE_S:
                self._candidate, self._candidate_run = None, 0  # the latched source is alive: no takeover
                return False
            if self._candidate == (*source, ssrc):
                self._candidate_run += 1
            else:
                self._candidate, self._candidate_run = (*source, ssrc), 1
            if self._candidate_run < RELATCH_PACKETS:
                return False
        # symmetric RTP: answer where the media really comes from
        if source != tuple(self.params.remote):
            log.debug("RTP latched to %s:%s (SDP said %s:%s)", *source, *self._signalled)
        self._source, self.params.remote = source, source
        self._candidate, self._candidate_run = None, 0
        self.verified = True  # that address sends us media itself: streaming back to it amplifies nothing
        return True

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error: %s", exc)

    # ---- control --------------------------------------------------------------------------

    def update(self, params: MediaParams) -> None:
        """New SDP on the same session (re-INVITE, UPDATE, hold): same socket, same sender."""
        if params.codec != self.params.codec:
            self._marker = True
        if params.direction != self.params.direction or params.remote != self._signalled:
            # the media timeout counts from now: after a long a=inactive hold the resume must not look like
            # silence since the hold began (it hung up the call on the next tick)
            with contextlib.suppress(RuntimeError):  # (no running loop: nothing is ticking either)
                self._last_rx = asyncio.get_running_loop().time()
        held = params.remote[0] in ("0.0.0.0", "::")  # RFC 2543 hold names no address: the latched one stays
        if params.remote != self._signalled and not held:  # a new address: the next sender is latched
            self._signalled = params.remote
            self._source, self._candidate, self._candidate_run = None, None, 0
        elif self._source is not None:
            params.remote = self._source  # same SDP address: keep answering where the media comes from
        self.params = params

    def start(self) -> None:
        """Start the one sender task; a second call is a no-op."""
        if self._task is None and not self._closed:
            self._last_rx = asyncio.get_running_loop().time()
            self._task = asyncio.create_task(self._run(), name=f"rtp-{self.local_port}")

    @property
    def sending(self) -> bool:
        return self._task is not None and not self._task.done()

    def send_dtmf(self, digits: str) -> None:
        for d in digits.upper():
            if d not in DTMF_EVENTS:
                continue
            if len(self._dtmf_queue) >= DTMF_QUEUE:
                if not self._dtmf_dropped:
                    log.warning("DTMF send queue full (%d digits): dropping digits", DTMF_QUEUE)
                self._dtmf_dropped += 1
                continue
            self._dtmf_queue.append(d)

    def flush(self) -> None:
        """Drop queued audio (barge-in, stop_playback)."""
        while not self.frames_out.empty():
            self.frames_out.get_nowait()
        self.drained.set()

    async def close(self, grace_s: float = 1.0) -> None:
        if self._closed:
            return
        self._closed = True
        self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited.wait()), grace_s)
        self.exited.set()
        if self._transport is not None:
            self._transport.close()
        self.stats.lost = self.jitter.lost
        self.stats.duplicates = self.jitter.duplicates
        audio.put_dropping_oldest(self.frames_in, None)

    # ---- the sender -----------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        k = math.floor(loop.time() / PTIME) + 1  # deadlines on one 20 ms grid shared by every call in the process:
        k0 = k  # one loop wake-up (one GIL acquisition) sends for all calls, instead of one per call
        try:
            while not self._closed:
                deadline = k * PTIME
                if deadline > loop.time():
                    await _sleep_until(loop, deadline)
                now = loop.time()
                if now - deadline >= PTIME:  # stalled: the missed packets are skipped, never sent in a burst
                    current = math.floor(now / PTIME)
                    if (current + 1) * PTIME - now < PTIME / 2:
                        current += 1  # the next slot is too close to send now as well: wait for it
                    self.stats.stalls += 1
                    self.stats.skipped_ticks += current - k
                    k = current
                    if k * PTIME > now:
                        continue
                self._tick(k - k0, now)
                k += 1
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("RTP sender failed")
        finally:
            self.exited.set()

    def _tick(self, n: int, now: float) -> None:
        p = self.params
        # Only a two-way stream times out: recvonly means the far end put us on hold (a=sendonly, c=0.0.0.0), and
        # a holding phone may well send nothing for as long as the hold lasts.
        if (self.media_timeout and not self._timed_out and p.direction == "sendrecv"
                and now - self._last_rx > self.media_timeout):
            self._timed_out = True
            if self.on_timeout:
                self.on_timeout()
        ts = self._ts_base + n * TS_STEP
        pkt: RtpPacket | None = None
        if self._dtmf_cur is None and self._dtmf_queue and p.dtmf_pt is not None and n >= self._dtmf_next:
            self._dtmf_cur = (DTMF_EVENTS.index(self._dtmf_queue.popleft()), n, 0)
        if self._dtmf_cur is not None and p.dtmf_pt is not None:
            event, start, sent = self._dtmf_cur
            sent += 1
            tone = min(sent, DTMF_TONE_TICKS)
            end = sent > DTMF_TONE_TICKS
            pkt = RtpPacket(p.dtmf_pt, 0, self._ts_base + start * TS_STEP, self.ssrc,
                            dtmf_payload(event, end, tone * TS_STEP), marker=sent == 1)
            self._dtmf_cur = None if sent >= DTMF_TONE_TICKS + DTMF_END_PACKETS else (event, start, sent)
            if self._dtmf_cur is None:
                self.stats.dtmf_sent += 1
                self._dtmf_next = n + 1 + DTMF_GAP_TICKS
        else:
            try:
                frame = self.frames_out.get_nowait()
            except asyncio.QueueEmpty:
                frame = audio.SILENCE
            if self.frames_out.empty():
                self.drained.set()
            pkt = RtpPacket(p.pt, 0, ts, self.ssrc, g711.encode(p.codec, frame), marker=self._marker)
        if p.direction in ("sendrecv", "sendonly") and self._transport is not None and p.remote[1] and self.verified:
            self._marker = False
            pkt.seq = self._seq
            self._seq = (self._seq + 1) & 0xFFFF
            data = pkt.to_bytes()
            if not self._send_holding_gil(data, p.remote):
                self._transport.sendto(data, p.remote)
            self.stats.sent += 1

    def _send_holding_gil(self, data: bytes, remote: tuple[str, int]) -> bool:
        """sendto(2) through ctypes.PyDLL, which keeps the GIL: a socket call that releases it hands the
        interpreter to any CPU-bound thread, and getting it back costs a switch interval per packet."""
        if _c_sendto is None or not FAST_SEND or self._transport is None:
            return False
        if self._sockaddr_for != remote:
            self._sockaddr_for = remote
            self._sockaddr = _sockaddr(*remote)
            sock = self._transport.get_extra_info("socket")
            self._fd = sock.fileno() if sock is not None else -1
        if self._sockaddr is None or self._fd < 0:
            return False
        _c_sendto(self._fd, data, len(data), 0, self._sockaddr, len(self._sockaddr))  # UDP: a full buffer drops it
        return True

    async def push(self, frame: bytes) -> None:
        """Queue one 320-byte PCM frame; waits while the (short) queue is full."""
        self.drained.clear()
        await self.frames_out.put(g711.fit_frame(frame))

    async def wait_drained(self) -> None:
        while not self.frames_out.empty() and not self._closed:
            self.drained.clear()
            await self.drained.wait()
