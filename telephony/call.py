"""The Call API the IVR drives: answer, audio in, audio out with barge-in, DTMF, transfer, hangup.

Audio is 20 ms frames of 16-bit little-endian mono PCM at 8 kHz (320 bytes) both ways; the
G.711 law on the wire is the negotiated one and never shows through this API.

    async def on_call(call: Call) -> None:
        await call.answer()
        await call.play(frames)                    # False if stopped by stop_playback/DTMF/hangup
        async for digit in call.dtmf(): ...
        await call.hangup()

When `on_call` returns, a call still up is hung up (and one still ringing gets 480), so a
crashed or forgetful handler never leaks a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel

from core import logs
from core.audio import FRAME_BYTES as PCM_FRAME
from core.audio import put_dropping_oldest
from telephony.mixer import Conference
from telephony.rtp import RtpSession
from telephony.sdp import Sdp
from telephony.sip.dialog import Dialog
from telephony.sip.transaction import ServerTransaction

log = logging.getLogger(__name__)

_HOLD_S = 0.030  # a bridged frame waits at most this long for the next one (1.5 packet times)
# DTMF from the line, per call: a keypad gives a few digits a second, RFC 4733 senders (dialers) up to ~10; past
# DTMF_RATE (with a DTMF_BURST allowance) digits are dropped, so a flood costs neither memory nor a bridged agent's
# ear. At most DTMF_QUEUED wait for a reader, and the record keeps the last DTMF_RECORDED.
DTMF_RATE = 20.0
DTMF_BURST = 20.0
DTMF_QUEUED = 64
DTMF_RECORDED = 256

State = Literal["ringing", "answering", "up", "ended"]


class CallRecord(BaseModel):
    call_id: str
    trace_id: str
    direction: Literal["in", "out"]
    caller: str
    callee: str
    started_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    codec: str | None = None
    end_reason: str | None = None
    sip_status: int | None = None
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    loss_pct: float = 0.0
    jitter_ms: float = 0.0
    pacing_stalls: int = 0
    dtmf_received: str = ""
    remote_media: str | None = None


class CallControl(Protocol):
    """What a Call asks of the SIP side (the endpoint implements it); the Call never sees SIP messages."""

    async def answer(self, call: Call) -> None: ...

    async def reject(self, call: Call, status: int, reason: str | None) -> None: ...

    async def hangup(self, call: Call, reason: str) -> None: ...

    async def send_dtmf(self, call: Call, digits: str) -> None: ...

    async def transfer(self, call: Call, uri: str, within_s: float) -> bool: ...


class Call:
    def __init__(self, control: CallControl, *, call_id: str, trace_id: str, direction: Literal["in", "out"],
                 caller: str, callee: str, started_at: datetime) -> None:
        self._control = control
        self.call_id = call_id
        self.trace_id = trace_id
        self.direction: Literal["in", "out"] = direction
        self.caller = caller
        self.callee = callee
        self.codec = ""
        self.state: State = "ringing"
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.headers: dict[str, str] = {}  # selected headers of the initial INVITE (e.g. X-*, Diversion)
        self._record = CallRecord(call_id=call_id, trace_id=trace_id, direction=direction, caller=caller,
                                  callee=callee, started_at=started_at)
        # SIP state, owned by the endpoint
        self.dialog: Dialog | None = None
        self.invite_tx: ServerTransaction | None = None
        self.rtp: RtpSession | None = None
        self.offer: Sdp | None = None  # the remote SDP offer of the INVITE (None: late offer)
        self.source: tuple[str, int] | None = None  # where the initial INVITE came from (inbound calls)
        self.sdp_version = 0
        self.session_id = 0
        self.acked = asyncio.Event()
        self.ack_body = b""
        self.media_ready = asyncio.Event()
        self.transfer_status: asyncio.Queue[int] = asyncio.Queue()
        # app side
        self._dtmf: asyncio.Queue[str | None] = asyncio.Queue(maxsize=DTMF_QUEUED)
        self._dtmf_tokens = DTMF_BURST
        self._dtmf_at = time.monotonic()
        self.dtmf_dropped = 0
        self._play_lock = asyncio.Lock()
        self._play_gen = 0
        self._interrupt_on_dtmf = False
        self.conference: Conference | None = None  # while bridged: the mixer others may join (supervision, taps)

    def __repr__(self) -> str:
        return f"<Call {self.direction} {self.caller}->{self.callee} {self.state} {self.call_id}>"

    # ---- lifecycle ------------------------------------------------------------------------

    async def answer(self) -> None:
        """Answer an inbound call; returns once the caller's ACK arrived (raises CallEnded if it never does)."""
        await self._control.answer(self)

    async def reject(self, status: int = 486, reason: str | None = None) -> None:
        """Refuse a ringing inbound call (486 Busy Here by default)."""
        await self._control.reject(self, status, reason)

    async def hangup(self, reason: str = "normal") -> None:
        await self._control.hangup(self, reason)

    async def wait_ended(self, within_s: float | None = None) -> str | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), within_s)
        return self.end_reason

    @property
    def record(self) -> CallRecord:
        r = self._record
        if self.rtp is not None:
            s = self.rtp.stats
            lost = self.rtp.jitter.lost
            r.packets_sent, r.packets_received, r.packets_lost = s.sent, s.received, lost
            expected = s.received + lost
            r.loss_pct = round(100.0 * lost / expected, 2) if expected else 0.0
            r.jitter_ms = round(s.jitter_ms, 2)
            r.pacing_stalls = s.stalls
            r.remote_media = f"{self.rtp.params.remote[0]}:{self.rtp.params.remote[1]}"
        r.codec = self.codec or None
        r.end_reason = self.end_reason
        return r

    # ---- audio ----------------------------------------------------------------------------

    async def _media(self) -> RtpSession | None:
        if not self.media_ready.is_set():
            waiter = asyncio.ensure_future(self.media_ready.wait())
            ender = asyncio.ensure_future(self.ended.wait())
            await asyncio.wait([waiter, ender], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            ender.cancel()
        return self.rtp if self.media_ready.is_set() and not self.ended.is_set() else None

    async def audio(self) -> AsyncIterator[bytes]:
        """Received 20 ms frames (320 bytes PCM16), in order, lost packets concealed with silence.
        Ends when the call ends. The newest second is kept if nobody reads."""
        rtp = await self._media()
        if rtp is None:
            return
        while True:
            frame = await rtp.frames_in.get()
            if frame is None:
                return
            yield frame

    async def play(self, frames: AsyncIterable[bytes] | Iterable[bytes], *, interrupt_on_dtmf: bool = True) -> bool:
        """Send 16-bit 8 kHz PCM paced at 20 ms (chunks of any length; 320-byte frames are the natural unit);
        returns when the last frame left.
        False if stopped by stop_playback(), a DTMF digit (unless interrupt_on_dtmf=False) or the end of the call."""
        rtp = await self._media()
        if rtp is None:
            return False
        async with self._play_lock:
            gen = self._play_gen
            self._interrupt_on_dtmf = interrupt_on_dtmf
            pending = bytearray()  # chunks of any length are re-cut into 20 ms frames

            async def feed(chunk: bytes) -> bool:
                pending.extend(chunk)
                while len(pending) >= PCM_FRAME:
                    if gen != self._play_gen or self.ended.is_set():
                        return False
                    await rtp.push(bytes(pending[:PCM_FRAME]))
                    del pending[:PCM_FRAME]
                return gen == self._play_gen and not self.ended.is_set()

            try:
                if isinstance(frames, AsyncIterable):
                    async for chunk in frames:
                        if not await feed(chunk):
                            return False
                else:
                    for chunk in frames:
                        if not await feed(chunk):
                            return False
                if pending:
                    await rtp.push(bytes(pending))  # the last, short frame is padded with silence
                if gen != self._play_gen:
                    return False
                await rtp.wait_drained()
                return gen == self._play_gen and not self.ended.is_set()
            finally:
                if gen != self._play_gen:
                    rtp.flush()
                self._interrupt_on_dtmf = False

    def stop_playback(self) -> None:
        """Barge-in: drop queued audio now; the running play() returns False."""
        self._play_gen += 1
        if self.rtp is not None:
            self.rtp.flush()

    @property
    def playing(self) -> bool:
        return self._play_lock.locked()

    # ---- DTMF -----------------------------------------------------------------------------

    def deliver_dtmf(self, digit: str) -> None:
        """A digit from the line (RTP event or SIP INFO): recorded, queued for dtmf(), and a barge-in if asked.
        Past the rate, or with the queue full, it is dropped (logged once per call)."""
        now = time.monotonic()
        self._dtmf_tokens = min(DTMF_BURST, self._dtmf_tokens + (now - self._dtmf_at) * DTMF_RATE)
        self._dtmf_at = now
        if self._dtmf_tokens < 1 or self._dtmf.full():
            if not self.dtmf_dropped:
                log.warning("DTMF over %s digits/s or %d unread: dropping digits", DTMF_RATE, DTMF_QUEUED,
                            extra=logs.fields(call_id=self.call_id))
            self.dtmf_dropped += 1
            return
        self._dtmf_tokens -= 1
        # bounded, and a short string rebuilt per digit: += on an ever longer string was quadratic
        self._record.dtmf_received = (self._record.dtmf_received + digit)[-DTMF_RECORDED:]
        if self._interrupt_on_dtmf and self.playing:
            self.stop_playback()
        self._dtmf.put_nowait(digit)

    async def dtmf(self) -> AsyncIterator[str]:
        """Digits as they arrive (RFC 4733 telephone-event, or SIP INFO). Ends when the call ends."""
        while True:
            if self.ended.is_set() and self._dtmf.empty():
                return
            d = await self._dtmf.get()
            if d is None:
                return
            yield d

    async def send_dtmf(self, digits: str) -> None:
        """Send digits as RFC 4733 events (SIP INFO if the peer did not offer telephone-event)."""
        await self._control.send_dtmf(self, digits)

    # ---- transfer and bridge --------------------------------------------------------------

    async def transfer(self, uri: str, within_s: float = 30.0) -> bool:
        """Blind transfer (REFER). True once the transferee reports the new call answered; this call then ends
        with reason "transferred". False if refused or failed; the call goes on."""
        return await self._control.transfer(self, uri, within_s)

    async def bridge(self, other: Call) -> None:
        """Relay audio (and DTMF) both ways until either call ends. Neither call is hung up here.

        The audio goes through a `Conference` (telephony/mixer.py), kept in `conference` on both calls while the
        bridge lasts, so a third leg can join it (`join`) and a recorder can tap it."""
        a, b = await self._media(), await other._media()
        if a is None or b is None:
            return

        async def relay_dtmf(src: Call, dst: Call) -> None:
            async for d in src.dtmf():
                await dst.send_dtmf(d)

        conf = Conference(f"bridge-{self.call_id}")
        conf.add(self.call_id, a, hears=[other.call_id])
        conf.add(other.call_id, b, hears=[self.call_id])
        self.conference = other.conference = conf
        conf.start()
        tasks = [asyncio.create_task(relay_dtmf(self, other)), asyncio.create_task(relay_dtmf(other, self)),
                 asyncio.create_task(self.ended.wait()), asyncio.create_task(other.ended.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            conf.close()
            for call in (self, other):
                if call.conference is conf:
                    call.conference = None
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=1.0)

    async def join(self, conference: Conference, hears: list[str]) -> bool:
        """Add this call to another call's bridge, hearing the legs named in `hears` (call ids); False when this
        call has no media (ended). Leave with `conference.remove(call.call_id)`."""
        rtp = await self._media()
        if rtp is None:
            return False
        conference.add(self.call_id, rtp, hears)
        return True

    # ---- state transitions the endpoint drives -------------------------------------------

    def begin_answer(self) -> None:
        self.state = "answering"

    def mark_answered(self, at: datetime, sip_status: int) -> None:
        """The 200 went out (inbound) or came in (outbound)."""
        self._record.answered_at = at
        self._record.sip_status = sip_status

    def mark_up(self) -> None:
        self.state = "up"

    def finish(self, reason: str, at: datetime, sip_status: int | None = None) -> None:
        if sip_status is not None:
            self._record.sip_status = sip_status
        self.state = "ended"
        self.end_reason = reason
        r = self._record
        r.ended_at = at
        if r.answered_at:
            r.duration_s = round((at - r.answered_at).total_seconds(), 3)
        put_dropping_oldest(self._dtmf, None)  # the end must reach the reader even past a full queue
        self.ended.set()


async def relay_audio(src: Call, dst: Call) -> None:
    """Send what `src` hears out of `dst` (a bridge leg; `relay_audio(call, call)` is an echo) until src ends."""
    src_rtp, dst_rtp = await src._media(), await dst._media()
    if src_rtp is None or dst_rtp is None:
        return
    await relay_frames(src_rtp, dst_rtp)


async def relay_frames(src_rtp: RtpSession, dst_rtp: RtpSession) -> None:
    """What one media session receives goes out of another, each burst one frame deep, until the source ends."""
    out = dst_rtp.frames_out

    def put(f: bytes) -> None:
        put_dropping_oldest(out, f)  # keep latency bounded

    held: bytes | None = None
    while True:
        if held is None:
            frame = await src_rtp.frames_in.get()
        else:
            try:  # Queue.get is safe to cancel; an async generator's __anext__ is not (it would close)
                frame = await asyncio.wait_for(src_rtp.frames_in.get(), _HOLD_S)
            except TimeoutError:
                # the burst ended (a DTX phone's talk spurt, a sender that stopped): the held frame goes now,
                # not in front of the next burst
                put(held)
                held = None
                continue
        if frame is None:
            if held is not None:
                put(held)
            return
        if held is None and out.empty():
            held = frame  # start each burst one frame deep: absorbs the phase between the two clocks
            continue
        if held is not None:
            put(held)
            held = None
        put(frame)
