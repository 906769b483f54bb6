"""The bridge mixer (telephony/mixer.py) under load: N bridged calls, each a Conference, against the same RTP
sessions relaying without a mixer, with and without CPU-bound Python threads in the process (issue 18).

    .venv/bin/python bench/bench_mixer.py                           # 10, 20, 40 calls, 10 s per configuration
    .venv/bin/python bench/bench_mixer.py --busy 0,1 --nice -10      # on a shared box: its own autogroup at nice -10
    .venv/bin/python bench/bench_mixer.py --calls 40 --legs 3 --only mixer --seconds 20

Configurations, per number of calls N (and per `--busy` value):

- `mixer 2 legs`: N Conferences (caller, agent hear each other), a recording tap on each (a sink appending the mix
  of caller + agent, as ivr.conference.Recorder.sink does; emptied every second as its flush would);
- `relay 2 legs`: the same 2N RtpSessions, no Conference: a task per direction moves what one leg receives to the
  other's send queue (telephony.call.relay_audio's logic, the bridge before the mixer);
- `mixer 3 legs`: a supervisor leg in barge mode (ivr.conference.routes: everyone hears everyone), the tap
  records all three (ivr.conference.recorded);
- `relay 3 legs`: 3N sessions without a mixer: caller and agent relayed to each other, the third leg echoes itself.

The far ends (the phones) run in a child process so they do not compete with the process under test for its GIL:
one socket per leg, one sender thread feeding a 440 Hz PCMA tone at 20 ms on an absolute clock (four phase groups,
0/5/10/15 ms), one receiver thread taking every leg's output with the kernel's arrival time (SO_TIMESTAMPNS).
`--busy K` adds K threads spinning pure Python in the process under test (bench_rtp_pacing.py's burn()).

Printed per configuration, over the measured window (after a 1 s warm-up):
outgoing packets/s per leg; inter-arrival gap p50/p95/p99/max (benchstats.summary) over every leg; gaps over 40 and
60 ms; packets the legs sent vs the window's 50/s per leg (RtpStats.sent) and how many of the received packets
carried audio (not the sender's own silence: the mix or the relay reached it); the ticker's tick (one round over
every conference) p50/p99/max in ms and how late it started after its grid point (p50/p99/max), `_Ticker.stalls`;
CPU % of the process (the busy threads' own CPU time subtracted, shown apart), the far-end process's CPU %, what the
rest of the machine used in the window (`others`, % of one core, from /proc/stat: if it is high the gaps are not the
mixer's alone), and RSS. The load average is printed before and after.
Nothing is asserted: it is a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import multiprocessing as mp
import os
import random
import resource
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchstats import summary

from atiende.commands.sip import tone_frames
from core.audio import SILENCE
from ivr.conference import recorded, routes
from telephony import g711
from telephony.call import relay_frames
from telephony.mixer import PHASE, Conference, _Ticker
from telephony.rtp import PTIME, MediaParams, RtpPacket, RtpSession

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
WARMUP_S = 1.0
HOLD_S = 0.030  # telephony.call._HOLD_S: a relayed frame waits at most this long for the next one
PORTS = (46000, 49999)


# ---- the far ends (child process) -------------------------------------------------------------------------------


def far_end(conn: Connection) -> None:
    """Serve runs until told to quit: ("run", leg ports) -> ("ready",); ("stop",) -> ("arrivals", per leg list of
    (kernel arrival time, payload carries audio), cpu seconds used)."""
    frames = [g711.encode("PCMA", f) for f in tone_frames(1.0)]
    silence = g711.encode("PCMA", SILENCE)
    while True:
        msg = conn.recv()
        if msg[0] == "quit":
            return
        ports: list[int] = msg[1]
        socks = []
        for _ in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            socks.append(s)
        arrivals: list[list[tuple[float, bool]]] = [[] for _ in ports]
        stop = threading.Event()
        cpu0 = _cpu(resource.RUSAGE_SELF)
        threads = [threading.Thread(target=send, args=(socks, ports, frames, stop), daemon=True),
                   threading.Thread(target=receive, args=(socks, arrivals, silence, stop), daemon=True)]
        for t in threads:
            t.start()
        conn.send(("ready",))
        conn.recv()  # ("stop",)
        stop.set()
        for t in threads:
            t.join()
        for s in socks:
            s.close()
        conn.send(("arrivals", arrivals, _cpu(resource.RUSAGE_SELF) - cpu0))


def send(socks: list[socket.socket], ports: list[int], frames: list[bytes], stop: threading.Event) -> None:
    """The phones' clocks: every leg gets a frame each 20 ms on an absolute grid, in four phase groups."""
    ssrcs = [random.getrandbits(32) for _ in ports]
    groups = [list(range(g, len(ports), 4)) for g in range(4)]  # phases 0, 5, 10, 15 ms
    t0 = time.monotonic() + 0.05
    for n in itertools.count():
        for g, members in enumerate(groups):
            at = t0 + n * PTIME + g * PTIME / 4
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop.is_set():
                return
            payload = frames[n % len(frames)]
            for i in members:
                pkt = RtpPacket(8, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, ssrcs[i], payload, marker=n == 0)
                try:
                    socks[i].sendto(pkt.to_bytes(), ("127.0.0.1", ports[i]))
                except OSError:
                    pass


def receive(socks: list[socket.socket], arrivals: list[list[tuple[float, bool]]], silence: bytes,
            stop: threading.Event) -> None:
    """Every leg's output with the kernel's arrival time, and whether it carried audio."""
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    space = socket.CMSG_SPACE(16)
    while not stop.is_set():
        for key, _ in sel.select(0.2):
            sock, i = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    data, anc, _, _ = sock.recvmsg(2048, space)
                except OSError:  # BlockingIOError: this socket is drained
                    break
                at = time.time()
                for level, kind, raw in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", raw[:16])
                        at = sec + nsec / 1e9
                arrivals[i].append((at, data[12:] != silence))
    sel.close()


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


# ---- the process under test ------------------------------------------------------------------------------------


def burn(stop: threading.Event, ids: list[int]) -> None:
    ids.append(threading.get_ident())
    x = 0
    while not stop.is_set():
        for i in range(20000):
            x = (x + i * i) % 1000003


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait (guest is in user)


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class Ticks:
    """Each Conference.tick of the window, timed; one round of the ticker = every conference's tick of one index."""

    def __init__(self) -> None:
        self.on = False
        self.rounds: dict[int, list[float]] = {}  # tick index -> [started (loop time), summed duration (s)]


class TimedConference(Conference):
    """Conference.tick, timed from outside (telephony/ is not changed)."""

    def __init__(self, name: str, ticks: Ticks, clock: Callable[[], float]) -> None:
        super().__init__(name)
        self._t = ticks
        self._clock = clock

    def tick(self) -> None:
        if not self._t.on:
            super().tick()
            return
        started = self._clock()
        t0 = time.perf_counter()
        super().tick()
        dt = time.perf_counter() - t0
        r = self._t.rounds.get(self.ticks)
        if r is None:
            self._t.rounds[self.ticks] = [started, dt]
        else:
            r[1] += dt


async def relay(src: RtpSession, dst: RtpSession) -> None:
    """The peer: telephony.call's own relay on two sessions (what a bridge without a mixer does)."""
    await relay_frames(src, dst)


async def grid_phase(loop: asyncio.AbstractEventLoop) -> None:
    """Sleep to 5 ms after the next point of the senders' 20 ms grid (they have sent, the ticker has not ticked)."""
    await asyncio.sleep((math.floor(loop.time() / PTIME) + 1) * PTIME + 0.005 - loop.time())


def thread_cpu(ids: list[int]) -> float:
    total = 0.0
    for tid in ids:
        try:
            total += time.clock_gettime(time.pthread_getcpuclockid(tid))
        except (OSError, AttributeError):
            pass
    return total


async def one(kind: str, legs: int, calls: int, seconds: float, conn: Connection, burner_ids: list[int]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rss0 = rss_kb()
    names = ["caller", "agent", "sup"][:legs]
    sessions: list[list[RtpSession]] = []
    for _ in range(calls):
        call = []
        for _ in names:
            s = RtpSession(MediaParams(codec="PCMA", pt=8, dtmf_pt=101, remote=("127.0.0.1", 9)), tx_frames=3)
            await s.open("127.0.0.1", *PORTS)
            call.append(s)
        sessions.append(call)
    flat = [s for call in sessions for s in call]
    ticks = Ticks()
    confs: list[TimedConference] = []
    tasks: list[asyncio.Task[None]] = []
    taped = [0]
    buffers: list[list[bytes]] = []
    for i, call in enumerate(sessions):
        if kind == "mixer":
            conf = TimedConference(f"bridge-{i}", ticks, loop.time)
            sup = "sup" if legs == 3 else None
            for name, hears in routes("caller", "agent", sup, "barge" if sup else None).items():
                conf.add(name, call[names.index(name)], hears)
            buf: list[bytes] = []
            buffers.append(buf)
            conf.tap(recorded("caller", "agent", sup, "barge" if sup else None), buf.append)
            confs.append(conf)
        else:
            tasks.append(asyncio.create_task(relay(call[0], call[1])))
            tasks.append(asyncio.create_task(relay(call[1], call[0])))
            if legs == 3:
                tasks.append(asyncio.create_task(relay(call[2], call[2])))

    async def flush_taps() -> None:  # the Recorder's periodic flush: the pending frames leave memory
        while True:
            await asyncio.sleep(1.0)
            for b in buffers:
                taped[0] += len(b)
                b.clear()

    tasks.append(asyncio.create_task(flush_taps()))
    for s in flat:
        s.start()
    for c in confs:
        c.start()
    conn.send(("run", [s.local_port for s in flat]))
    await loop.run_in_executor(None, conn.recv)  # ("ready",)
    await asyncio.sleep(WARMUP_S)
    await grid_phase(loop)  # both ends of the window at the same phase of the senders' grid: sent is exact

    sent0 = [s.stats.sent for s in flat]
    ticker = _Ticker.of(loop)
    stalls0 = ticker.stalls
    rstalls0 = sum(s.stats.stalls for s in flat)
    box0 = machine_busy_s()
    busy0, cpu0, wall0, t0 = thread_cpu(burner_ids), _cpu(resource.RUSAGE_SELF), time.time(), loop.time()
    ticks.on = True
    await asyncio.sleep(seconds - PTIME / 2)
    await grid_phase(loop)
    ticks.on = False
    busy1, cpu1, wall1, t1 = thread_cpu(burner_ids), _cpu(resource.RUSAGE_SELF), time.time(), loop.time()
    box1 = machine_busy_s()
    sent = sum(s.stats.sent - a for s, a in zip(flat, sent0, strict=True))
    stalls = ticker.stalls - stalls0 if confs else None
    rstalls = sum(s.stats.stalls for s in flat) - rstalls0
    rss = rss_kb()

    conn.send(("stop",))
    _, arrivals, far_cpu = await loop.run_in_executor(None, conn.recv)
    for c in confs:
        c.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s in flat:
        await s.close()

    window = wall1 - wall0
    gaps: list[float] = []
    counts: list[int] = []
    audio = total = 0
    for stream in arrivals:
        pk = [a for a in stream if wall0 <= a[0] < wall1]
        counts.append(len(pk))
        total += len(pk)
        audio += sum(1 for a in pk if a[1])
        gaps += [(b[0] - a[0]) * 1000 for a, b in itertools.pairwise(pk)]
    rounds = [r for r in ticks.rounds.values() if t0 <= r[0] < t1]
    return {
        "kind": kind, "legs": legs, "calls": calls, "streams": len(flat), "window": window,
        "pps": sum(counts) / max(1, len(counts)) / window, "gaps": summary(gaps),
        "over40": sum(1 for g in gaps if g > 40), "over60": sum(1 for g in gaps if g > 60),
        "sent": sent, "expected": len(flat) * round((t1 - t0) / PTIME), "audio": audio / max(1, total),
        "tick": summary([r[1] * 1000 for r in rounds]) if rounds else None,
        "late": summary([((r[0] - PHASE) % PTIME) * 1000 for r in rounds]) if rounds else None,
        "rounds": len(rounds), "stalls": stalls, "rtp_stalls": rstalls, "taped": taped[0],
        "cpu": 100 * ((cpu1 - cpu0) - (busy1 - busy0)) / window, "busy_cpu": 100 * (busy1 - busy0) / window,
        "far_cpu": 100 * far_cpu / (window + WARMUP_S), "rss": rss, "rss_grown": rss - rss0,
        # the rest of the machine: every CPU second used in the window minus this process and the far ends'
        "others": 100 * ((box1 - box0) - (cpu1 - cpu0)) / window - 100 * far_cpu / (window + WARMUP_S),
    }


def show(busy: int, r: dict[str, Any]) -> None:
    g = r["gaps"]
    tick = (f"tick p50={r['tick']['p50']:.3f} p99={r['tick']['p99']:.3f} max={r['tick']['max']:.3f} ms  "
            f"late p50={r['late']['p50']:.2f} p99={r['late']['p99']:.2f} max={r['late']['max']:.2f} ms  "
            f"ticker stalls={r['stalls']}" if r["tick"] else "tick -")
    print(f"{r['kind']} {r['legs']} legs  calls={r['calls']:<3} busy={busy} streams={r['streams']:<3} "
          f"pps/leg={r['pps']:5.1f}  gap p50={g['p50']:5.1f} p95={g['p95']:5.1f} p99={g['p99']:5.1f} "
          f"max={g['max']:6.1f} ms  >40ms={r['over40']:<4} >60ms={r['over60']:<4} "
          f"sent={r['sent']}/{r['expected']} audio={100 * r['audio']:5.1f}%  rtp re-anchors={r['rtp_stalls']}  "
          f"{tick}  cpu={r['cpu']:5.1f}% (busy threads {r['busy_cpu']:.0f}%)  far ends {r['far_cpu']:.1f}%  "
          f"others {max(0.0, r['others']):.0f}%  "
          f"rss={r['rss'] // 1024} MB (+{r['rss_grown'] / 1024:.1f})", flush=True)


def autogroup() -> str:
    p = Path("/proc/self/autogroup")
    return p.read_text().strip() if p.exists() else "no autogroup"


def set_autogroup_nice(nice: int) -> None:
    """A new session (so a new autogroup: the far-end child joins it) with `nice`; warns when it cannot."""
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (`setsid` on the command line): its autogroup is ours alone
    try:
        Path("/proc/self/autogroup").write_text(str(nice))
    except OSError as exc:
        print(f"autogroup nice {nice} not set: {exc}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--calls", default="10,20,40", help="comma-separated numbers of bridged calls")
    ap.add_argument("--busy", default="0", help="comma-separated numbers of CPU-bound threads in the process")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per configuration")
    ap.add_argument("--only", default="mixer,relay", help="comma-separated: mixer, relay")
    ap.add_argument("--legs", default="2,3", help="comma-separated: 2 (caller, agent), 3 (a supervisor in barge mode)")
    ap.add_argument("--nice", type=int, default=None,
                    help="run in a session of its own with this autogroup nice (e.g. -10, as the service's Nice=): "
                         "with autogroup scheduling a process's own nice does not compete with other sessions")
    args = ap.parse_args()
    if args.nice is not None:
        set_autogroup_nice(args.nice)
    from config.telephony import SipConfig

    default_ms = SipConfig().gil_switch_interval_ms
    if default_ms:
        sys.setswitchinterval(default_ms / 1000)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=far_end, args=(child,), daemon=True)
    proc.start()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, loadavg {open('/proc/loadavg').read().strip()}, "
          f"switch interval {sys.getswitchinterval() * 1000:g} ms, "
          f"{autogroup()}, {args.seconds:g} s per configuration after "
          f"{WARMUP_S:g} s warm-up; far ends in process {proc.pid}", flush=True)
    try:
        for calls in (int(c) for c in args.calls.split(",")):
            for busy in (int(b) for b in args.busy.split(",")):
                stop = threading.Event()
                ids: list[int] = []
                burners = [threading.Thread(target=burn, args=(stop, ids), daemon=True) for _ in range(busy)]
                for t in burners:
                    t.start()
                try:
                    for legs in (int(n) for n in args.legs.split(",")):
                        for kind in args.only.split(","):
                            show(busy, asyncio.run(one(kind, legs, calls, args.seconds, parent, ids)))
                finally:
                    stop.set()
                    for t in burners:
                        t.join()
    finally:
        parent.send(("quit",))
        proc.join(5)
    print(f"loadavg {open('/proc/loadavg').read().strip()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
