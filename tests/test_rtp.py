"""RTP: packets, jitter buffer, RFC 4733 DTMF, G.711, and the paced sender on real loopback sockets.

Pacing is checked on its logic (sequence, timestamps, no burst after a stall), never on timing
thresholds; the timing figures are measured in bench/bench_rtp_pacing.py.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time

import pytest

from telephony import g711
from telephony.rtp import RELATCH_PACKETS, RELATCH_SILENCE_S, DtmfReceiver, JitterBuffer, MediaParams, RtpPacket, RtpSession
from telephony.testing import RtpPeer, snr_db, tone

PORTS = (43000, 43999)


def _block_the_loop(seconds: float) -> None:
    time.sleep(seconds)


def pkt(seq: int, ts: int = 0, pt: int = 8, payload: bytes = b"\xd5" * 160) -> RtpPacket:
    return RtpPacket(pt, seq & 0xFFFF, ts, 1234, payload)


def test_packet_roundtrip_with_csrc_extension_and_padding() -> None:
    p = RtpPacket(8, 65535, 2**32 - 160, 0xDEADBEEF, b"abc", marker=True)
    assert RtpPacket.parse(p.to_bytes()) == p
    # 1 CSRC, a one-word extension, 2 bytes of padding
    raw = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 1, 0, 7, 160, 9) + b"CSRC" + b"\xbe\xde\x00\x01XXXX" + b"hi" + b"\x00\x02"
    q = RtpPacket.parse(raw)
    assert (q.seq, q.payload) == (7, b"hi")


def test_jitter_buffer_reorders_drops_duplicates_and_conceals() -> None:
    jb = JitterBuffer(depth=3)
    out: list[int | None] = []
    for s in [10, 12, 11, 11, 13, 9, 14]:
        out += [p.seq if p else None for p in jb.push(pkt(s))]
    assert out == [10, 11, 12, 13, 14]
    assert jb.duplicates == 2  # 11 again, and 9 (already past)
    # 15 lost: once three later packets wait, the gap is concealed with one None
    for s in [16, 17, 18]:
        out += [p.seq if p else None for p in jb.push(pkt(s))]
    assert out[-4:] == [None, 16, 17, 18]
    assert jb.lost == 1


def test_jitter_buffer_sequence_wrap() -> None:
    jb = JitterBuffer()
    seqs = [65533, 65534, 65535, 0, 1, 2]
    got = [p.seq for s in seqs for p in jb.push(pkt(s)) if p]
    assert got == seqs and jb.lost == 0


def test_dtmf_receiver_one_digit_per_event() -> None:
    rx = DtmfReceiver()
    digits = []
    for ts, event in [(1000, 5), (2000, 11)]:
        for i in range(1, 5):
            digits.append(rx.feed(pkt(i, ts, 101, struct.pack("!BBH", event, 10, 160 * i))))
        for _ in range(3):  # the end packet, sent three times
            digits.append(rx.feed(pkt(9, ts, 101, struct.pack("!BBH", event, 0x8A, 800))))
    assert [d for d in digits if d] == ["5", "#"]


def test_dtmf_receiver_takes_only_events_later_than_the_last() -> None:
    """Replayed or cycling event timestamps used to become digits again once out of a 16-entry memory."""
    rx = DtmfReceiver()
    stamps = [1000 + 960 * i for i in range(40)]
    got = [rx.feed(pkt(i, ts, 101, struct.pack("!BBH", 1, 0x8A, 800))) for i, ts in enumerate(stamps * 5)]
    assert [d for d in got if d] == ["1"] * 40  # each event once, the four replays of the cycle nothing
    assert rx.feed(pkt(0, 500, 101, struct.pack("!BBH", 2, 0x8A, 800))) is None  # an older event
    assert rx.feed(pkt(0, stamps[-1] + 0x80000000, 101, struct.pack("!BBH", 3, 0x8A, 800))) is None  # half the
    # timestamp space away reads as the past, not the future
    wrap = DtmfReceiver()
    assert wrap.feed(pkt(0, 0xFFFFFF00, 101, struct.pack("!BBH", 3, 0x8A, 800))) == "3"
    assert wrap.feed(pkt(1, 0x100, 101, struct.pack("!BBH", 4, 0x8A, 800))) == "4"  # the timestamp wrapped
    other = RtpPacket(101, 5, 10, 999, struct.pack("!BBH", 5, 0x8A, 800))
    assert wrap.feed(other) == "5"  # a new SSRC has its own timestamp base


def test_g711_both_laws_keep_the_signal() -> None:
    src = b"".join(tone(0.5, 700))
    for codec in ("PCMA", "PCMU"):
        back = g711.decode(codec, g711.encode(codec, src))
        assert snr_db(src, back) > 30
    # A-law bytes read as µ-law are noise: the pyVoIP bug this guards against
    assert snr_db(src, g711.decode("PCMU", g711.encode("PCMA", src))) < 5


@pytest.mark.anyio
async def test_sender_sequence_timestamps_and_no_burst_after_a_stall() -> None:
    peer = await RtpPeer.open()
    s = RtpSession(MediaParams(codec="PCMA", pt=8, dtmf_pt=101, remote=("127.0.0.1", peer.port)))
    await s.open("127.0.0.1", *PORTS)
    s.start()
    s.start()  # a second start is a no-op: still one sender
    await asyncio.sleep(0.2)
    _block_the_loop(0.25)  # ~12 packet times missed, like a GC pause or a CPU-starved process
    await asyncio.sleep(0.2)
    await s.close()
    pk = [r.pkt for r in peer.packets]
    assert len({p.ssrc for p in pk}) == 1
    assert all((b.seq - a.seq) & 0xFFFF == 1 for a, b in itertools.pairwise(pk))  # no packet lost or doubled
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(pk)]
    jumps = [st for st in steps if st != 160]
    # re-anchored, not bursting: each stall shows as one timestamp jump over the missed time, and the long one is there
    assert s.stats.stalls >= 1 and len(jumps) == s.stats.stalls
    assert all(j % 160 == 0 and j >= 320 for j in jumps) and max(jumps) >= 160 * 10
    assert peer.packets[0].pkt.marker and not any(p.marker for p in pk[1:])
    peer.close()


@pytest.mark.anyio
async def test_dtmf_overtakes_queued_audio_and_audio_timestamps_continue() -> None:
    peer = await RtpPeer.open()
    s = RtpSession(MediaParams(codec="PCMU", pt=0, dtmf_pt=101, remote=("127.0.0.1", peer.port)), tx_frames=50)
    await s.open("127.0.0.1", *PORTS)
    for f in tone(0.5):
        s.frames_out.put_nowait(f)
    s.send_dtmf("7")
    s.start()
    await asyncio.sleep(0.3)
    await s.close()
    pk = [r.pkt for r in peer.packets]
    assert [p.pt for p in pk[:8]] == [101] * 8  # the digit went first: 5 updates + 3 end packets
    events = pk[:8]
    assert {p.timestamp for p in events} == {events[0].timestamp} and events[0].marker
    assert [p.payload[1] & 0x80 for p in events] == [0] * 5 + [0x80] * 3
    assert [struct.unpack("!H", p.payload[2:4])[0] for p in events] == [160, 320, 480, 640, 800, 800, 800, 800]
    audio = pk[8]
    step = (audio.timestamp - events[0].timestamp) & 0xFFFFFFFF
    assert audio.pt == 0 and step % 160 == 0 and step >= 8 * 160
    assert step == 8 * 160 or s.stats.stalls  # a loaded machine may skip ticks; the timeline still adds up
    assert s.stats.dtmf_sent == 1
    peer.close()


@pytest.mark.anyio
async def test_receive_path_decodes_reorders_latches_and_reports_dtmf() -> None:
    digits: list[str] = []
    s = RtpSession(MediaParams(codec="PCMA", pt=8, dtmf_pt=101, remote=("127.0.0.1", 9)), on_dtmf=digits.append)
    port = await s.open("127.0.0.1", *PORTS)
    peer = await RtpPeer.open()
    frames = tone(0.1)
    order = [0, 2, 1, 3, 3, 4]
    for i in order:
        peer.send_packet(8, g711.encode("PCMA", frames[i]), ("127.0.0.1", port), seq=100 + i, ts=160 * i)
    peer.seq = 105
    peer.send_dtmf("9", ("127.0.0.1", port))  # 7 event packets in the same sequence space (105-111)
    peer.send_packet(8, g711.encode("PCMA", frames[4]), ("127.0.0.1", port), seq=112, ts=160 * 10)
    await asyncio.sleep(0.1)
    got = [s.frames_in.get_nowait() for _ in range(s.frames_in.qsize())]
    assert len(got) == 6 and snr_db(b"".join(frames[:5]), b"".join(x for x in got[:5] if x)) > 30
    assert digits == ["9"]
    assert s.jitter.lost == 0 and s.jitter.concealed == 0  # the event packets are not losses
    assert s.params.remote == ("127.0.0.1", peer.transport.get_extra_info("sockname")[1])  # type: ignore[union-attr]
    assert s.jitter.duplicates == 1
    await s.close()
    peer.close()


@pytest.mark.anyio
async def test_latched_source_holds_until_silent_then_a_steady_new_source_takes_over() -> None:
    """Symmetric RTP latches once; a NAT rebinding (the caller's port changes after a silence) still re-latches,
    while a stray source next to a live caller never does."""
    digits: list[str] = []
    s = RtpSession(MediaParams(codec="PCMA", pt=8, dtmf_pt=101, remote=("127.0.0.1", 9)), on_dtmf=digits.append)
    port = await s.open("127.0.0.1", *PORTS)
    a, b = await RtpPeer.open(), await RtpPeer.open()
    dest = ("127.0.0.1", port)
    silence = [bytes(320)] * 3
    await a.send_audio(silence, "PCMA", dest)
    assert s.params.remote == ("127.0.0.1", a.port) and s.stats.received == 3
    await b.send_audio(silence * 3, "PCMA", dest)  # a live source next to it: dropped, however many
    b.send_dtmf("7", dest)
    await asyncio.sleep(0.05)
    assert s.params.remote == ("127.0.0.1", a.port) and s.stats.received == 3 and digits == []
    await asyncio.sleep(RELATCH_SILENCE_S + 0.1)  # a falls silent (its NAT binding changed, say)
    await b.send_audio(silence[:1] * (RELATCH_PACKETS - 1), "PCMA", dest)
    assert s.params.remote == ("127.0.0.1", a.port)  # not yet: a few packets in a row are needed
    await b.send_audio(silence[:1], "PCMA", dest)
    assert s.params.remote == ("127.0.0.1", b.port) and s.stats.received == 3 + 1  # its packets until then: dropped
    b.send_dtmf("4", dest)
    await a.send_audio(silence, "PCMA", dest)  # now a is the stranger
    await asyncio.sleep(0.05)
    assert s.params.remote == ("127.0.0.1", b.port) and digits == ["4"] and s.stats.received == 3 + 1 + 7
    await s.close()
    a.close()
    b.close()


@pytest.mark.anyio
async def test_a_hold_keeps_the_latched_source() -> None:
    """A c=0.0.0.0 hold names no address: it must not reopen the latch to whoever sends first during the hold."""
    digits: list[str] = []
    s = RtpSession(MediaParams(codec="PCMA", pt=8, dtmf_pt=101, remote=("127.0.0.1", 9)), on_dtmf=digits.append)
    port = await s.open("127.0.0.1", *PORTS)
    a, b = await RtpPeer.open(), await RtpPeer.open()
    dest = ("127.0.0.1", port)
    await a.send_audio([bytes(320)] * 3, "PCMA", dest)
    for remote, direction in [(("0.0.0.0", 9), "recvonly"), (("127.0.0.1", 9), "sendrecv")]:  # hold, resume
        s.update(MediaParams(codec="PCMA", pt=8, dtmf_pt=101, remote=remote, direction=direction))
        b.send_dtmf("3", dest)
        await b.send_audio([bytes(320)], "PCMA", dest)
        assert s.params.remote == ("127.0.0.1", a.port) and digits == []
    await s.close()
    a.close()
    b.close()
