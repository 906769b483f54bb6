"""A small audio mixer for bridged calls: two legs (caller and agent), three with a supervisor, and taps that
record a mix.

Each leg says whom it hears (`Conference.route`): a supervisor who listens hears caller and agent and is heard by
nobody; whispering, the agent hears them too; barging, everyone hears everyone. Mixing is a sum of 16-bit PCM
with saturation (`audioop.add`, C, about a microsecond per frame), so it runs on the event loop.

Pacing: the RTP senders keep their absolute 20 ms grid (telephony/rtp.py) and are not touched. One task per event
loop ticks every conference of the process on the same grid, half a packet time after the senders, so a mixed
frame is queued 10 ms before the sender that takes it. Each tick takes at most one received frame per leg:

- a leg whose queue was empty starts again only once a frame has waited one tick (a frame of jitter absorbed,
  the way `relay_audio` holds the first frame of a burst), and a lone frame still goes out on the next tick;
- a backlog beyond `MAX_DEPTH` frames (a sender whose clock runs fast, a burst after a stall) drops the oldest,
  so latency stays bounded;
- a leg with nothing this tick adds nothing to the mixes (a listener hearing nobody gets the sender's silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterable
from typing import ClassVar

from core.audio import FRAME_BYTES, SILENCE, put_dropping_oldest
from telephony.rtp import PTIME, RtpSession

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 (removed in 3.13, where audioop-lts provides it).
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

log = logging.getLogger(__name__)

MAX_DEPTH = 6  # 120 ms of received audio waiting at most; beyond it the oldest frames go
PHASE = PTIME / 2  # ticks fall between the senders' ticks

Sink = Callable[[bytes], None]


def mix(frames: Iterable[bytes | None]) -> bytes | None:
    """The saturated sum of the frames present; None when none is."""
    out: bytes | None = None
    for f in frames:
        if f is None:
            continue
        if len(f) != FRAME_BYTES:
            f = (f + SILENCE)[:FRAME_BYTES]
        out = f if out is None else audioop.add(out, f, 2)
    return out


class _Leg:
    __slots__ = ("dropped", "hears", "name", "rtp", "waited")

    def __init__(self, name: str, rtp: RtpSession, hears: frozenset[str]) -> None:
        self.name = name
        self.rtp = rtp
        self.hears = hears
        self.waited = -1  # -1: playing; n >= 0: starting again, a frame has waited n ticks
        self.dropped = 0

    def take(self) -> bytes | None:
        q = self.rtp.frames_in
        n = q.qsize()
        if n == 0:
            self.waited = 0
            return None
        if self.waited >= 0:
            self.waited += 1
            if self.waited < 2 and n < 2:
                return None  # hold the first frame of a burst one tick: absorbs the phase of the two clocks
            self.waited = -1
        while n > MAX_DEPTH:
            q.get_nowait()
            n -= 1
            self.dropped += 1
        frame = q.get_nowait()
        if frame is None:
            q.put_nowait(None)  # the end of the call stays visible to whoever reads next
            return None
        return frame


class Conference:
    """Legs (RTP sessions of calls) and who hears whom; `start()` joins the loop's ticker, `close()` leaves it."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._legs: dict[str, _Leg] = {}
        self._taps: dict[int, tuple[frozenset[str], Sink]] = {}
        self._next_tap = 0
        self._ticker: _Ticker | None = None
        self.ticks = 0

    def __contains__(self, name: object) -> bool:
        return name in self._legs

    @property
    def legs(self) -> list[str]:
        return list(self._legs)

    def add(self, name: str, rtp: RtpSession, hears: Iterable[str] = ()) -> None:
        self._legs[name] = _Leg(name, rtp, frozenset(hears))

    def remove(self, name: str) -> None:
        self._legs.pop(name, None)
        for leg in self._legs.values():
            if name in leg.hears:
                leg.hears = leg.hears - {name}

    def route(self, name: str, hears: Iterable[str]) -> None:
        """What leg `name` hears from now on (the next tick)."""
        leg = self._legs.get(name)
        if leg is not None:
            leg.hears = frozenset(hears)

    def hears(self, name: str) -> frozenset[str]:
        leg = self._legs.get(name)
        return leg.hears if leg is not None else frozenset()

    def tap(self, sources: Iterable[str], sink: Sink) -> int:
        """Call `sink` every tick with the mix of `sources` (silence when none spoke): a recording in real time.
        The sink runs on the loop: it must only append. Returns the tap's id for `untap`/`retap`."""
        self._next_tap += 1
        self._taps[self._next_tap] = (frozenset(sources), sink)
        return self._next_tap

    def retap(self, tap_id: int, sources: Iterable[str]) -> None:
        if tap_id in self._taps:
            self._taps[tap_id] = (frozenset(sources), self._taps[tap_id][1])

    def untap(self, tap_id: int) -> None:
        self._taps.pop(tap_id, None)

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = _Ticker.of(asyncio.get_running_loop())
            self._ticker.add(self)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.discard(self)
            self._ticker = None

    def tick(self) -> None:
        self.ticks += 1
        got = {name: leg.take() for name, leg in self._legs.items()}
        for leg in self._legs.values():
            out = mix(got.get(src) for src in leg.hears)
            if out is not None:
                put_dropping_oldest(leg.rtp.frames_out, out)
                leg.rtp.drained.clear()
        for sources, sink in list(self._taps.values()):
            sink(mix(got.get(src) for src in sources) or SILENCE)


class _Ticker:
    """One task per loop ticks every conference on the shared 20 ms grid (one wake-up for all of them)."""

    _by_loop: ClassVar[dict[asyncio.AbstractEventLoop, _Ticker]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.conferences: list[Conference] = []
        self.task: asyncio.Task[None] | None = None
        self.stalls = 0

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Ticker:
        ticker = cls._by_loop.get(loop)
        if ticker is None or ticker.loop.is_closed():
            for old in [lp for lp in cls._by_loop if lp.is_closed()]:
                del cls._by_loop[old]
            ticker = cls._by_loop[loop] = cls(loop)
        return ticker

    def add(self, conf: Conference) -> None:
        self.conferences.append(conf)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name="conference-ticker")

    def discard(self, conf: Conference) -> None:
        with contextlib.suppress(ValueError):
            self.conferences.remove(conf)
        if not self.conferences and self.task is not None:
            self.task.cancel()  # nothing to mix: no task left behind (tests close their loops)
            self.task = None

    async def _run(self) -> None:
        loop = self.loop
        k = math.floor(loop.time() / PTIME) + 1
        while self.conferences:
            deadline = k * PTIME + PHASE
            delay = deadline - loop.time()
            if delay > 0:
                fut = loop.create_future()
                handle = loop.call_at(deadline, _wake, fut)
                try:
                    await fut
                finally:
                    handle.cancel()
            now = loop.time()
            if now - deadline >= PTIME:  # stalled: skip the missed ticks (the legs' backlogs are trimmed)
                self.stalls += 1
                k = math.floor((now - PHASE) / PTIME)
            for conf in list(self.conferences):
                try:
                    conf.tick()
                except Exception:
                    log.exception("conference %s: tick failed", conf.name)
            k += 1


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
