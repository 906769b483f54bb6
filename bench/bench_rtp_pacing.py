"""RTP pacing of telephony.rtp.RtpSession, with and without CPU-bound Python threads in the same process.

    .venv/bin/python bench/bench_rtp_pacing.py                       # 1, 20, 60 calls x 0, 1, 2 busy threads, 10 s
    .venv/bin/python bench/bench_rtp_pacing.py --calls 60 --busy 1 --seconds 20 --baseline

Each call is one RtpSession sending a tone (PCMA, 20 ms) from the asyncio loop, exactly as in a
call; `--busy N` adds N threads spinning pure Python (holding the GIL like a speech engine's
Python glue would). A receiver thread records the kernel's arrival time of every packet
(SO_TIMESTAMPNS), so the numbers do not depend on the receiver getting the GIL.

Printed per run: packets/s per call, inter-packet gap p50/p99/max, gaps over 40 ms, rate drift
(packets sent vs wall time), timestamp drift (RTP clock vs arrival clock), re-anchors, CPU % and
RSS per call. `--baseline` runs the same load with pyVoIP's scheme (one thread per call,
`send(); time.sleep(0.02)`), for comparison in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import struct
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from atiende.commands.sip import tone_frames
from telephony import g711
from telephony.rtp import MediaParams, RtpPacket, RtpSession

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


class Receiver(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.streams: dict[int, list[tuple[float, int, int]]] = defaultdict(list)  # ssrc -> (arrival, seq, ts)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            at = time.time()
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    at = sec + nsec / 1e9
            try:
                p = RtpPacket.parse(data)
            except ValueError:
                continue
            self.streams[p.ssrc].append((at, p.seq, p.timestamp))


def burn(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(20000):
            x = (x + i * i) % 1000003


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def run_asyncio(calls: int, seconds: float, port: int) -> tuple[list[RtpSession], int]:
    frames = tone_frames(1.0)
    before = rss_kb()
    sessions = []
    for _ in range(calls):
        s = RtpSession(MediaParams(codec="PCMA", pt=8, dtmf_pt=101, remote=("127.0.0.1", port)))
        await s.open("127.0.0.1", 46000, 47999)
        sessions.append(s)

    async def feed(s: RtpSession) -> None:
        i = 0
        while True:
            await s.push(frames[i % len(frames)])  # what Call.play does
            i += 1

    feeders = [asyncio.create_task(feed(s)) for s in sessions]
    for s in sessions:
        s.start()
    grown = rss_kb() - before
    await asyncio.sleep(seconds)
    for t in feeders:
        t.cancel()
    for s in sessions:
        await s.close()
    return sessions, grown


def run_threads(calls: int, seconds: float, port: int) -> int:
    """pyVoIP's scheme: a thread per call, relative sleep after each packet."""
    frames = [g711.encode("PCMA", f) for f in tone_frames(1.0)]
    stop = threading.Event()
    before = rss_kb()

    def sender() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ssrc, seq, ts, i = int.from_bytes(os.urandom(4), "big"), 0, 0, 0
        while not stop.is_set():
            sock.sendto(RtpPacket(8, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, frames[i % len(frames)]).to_bytes(),
                        ("127.0.0.1", port))
            seq, ts, i = seq + 1, ts + 160, i + 1
            time.sleep(0.02)
        sock.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(calls)]
    for t in threads:
        t.start()
    grown = rss_kb() - before
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return grown


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def report(name: str, calls: int, busy: int, rx: Receiver, cpu_s: float, seconds: float, rss_grown: int,
           stalls: int | None) -> None:
    gaps: list[float] = []
    rate_drift: list[float] = []
    ts_drift: list[float] = []
    counts = []
    for pk in rx.streams.values():
        pk = pk[5:]  # skip start-up
        if len(pk) < 10:
            continue
        counts.append(len(pk))
        gaps += [(b[0] - a[0]) * 1000 for a, b in itertools.pairwise(pk)]
        span = pk[-1][0] - pk[0][0]
        rate_drift.append(((len(pk) - 1) * 0.020 - span) / span * 100)  # negative: fewer packets than wall time
        ts_span = ((pk[-1][2] - pk[0][2]) & 0xFFFFFFFF) / 8000
        ts_drift.append((ts_span - span) / span * 100)
    pps = sum(counts) / max(1, len(counts)) / seconds
    over40 = sum(1 for g in gaps if g > 40)
    mean = sum(rate_drift) / max(1, len(rate_drift))
    tsd = sum(ts_drift) / max(1, len(ts_drift))
    print(f"{name:<22} calls={calls:<3} busy={busy}  streams={len(counts):<3} pps/call={pps:5.1f}  "
          f"gap p50={pct(gaps, .5):5.1f} p99={pct(gaps, .99):6.1f} max={max(gaps or [0]):7.1f} ms  >40ms={over40:<4} "
          f"rate drift={mean:+.3f}%  ts drift={tsd:+.3f}%  "
          f"{'re-anchors=' + str(stalls) + '  ' if stalls is not None else ''}"
          f"cpu={100 * cpu_s / seconds:5.1f}%  rss/call={rss_grown / max(1, calls):.0f} KB", flush=True)


def one(calls: int, busy: int, seconds: float, baseline: bool) -> None:
    stop = threading.Event()
    burners = [threading.Thread(target=burn, args=(stop,), daemon=True) for _ in range(busy)]
    for t in burners:
        t.start()
    try:
        for kind in (["asyncio", "threads"] if baseline else ["asyncio"]):
            rx = Receiver()
            rx.start()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            if kind == "asyncio":
                sessions, grown = asyncio.run(run_asyncio(calls, seconds, rx.port))
                stalls: int | None = sum(s.stats.stalls for s in sessions)
                name = "atiende (asyncio)"
            else:
                grown = run_threads(calls, seconds, rx.port)
                stalls = None
                name = "sleep(0.02) threads"
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            time.sleep(0.3)
            rx.stop.set()
            rx.join()
            rx.sock.close()
            # the burners' CPU is in the total; subtract what they would take alone (a full core each)
            cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) - busy * 0.0
            report(name, calls, busy, rx, cpu, seconds, grown, stalls)
    finally:
        stop.set()
        for t in burners:
            t.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--calls", default="1,20,60", help="comma-separated simultaneous calls")
    ap.add_argument("--busy", default="0,1,2", help="comma-separated numbers of CPU-bound threads in the process")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--baseline", action="store_true", help="also run pyVoIP's thread-per-call relative-sleep scheme")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval(S) for the run (default: what SipEndpoint sets from "
                         "sip.gil_switch_interval_ms; 0.005 is CPython's own default)")
    ap.add_argument("--plain-send", action="store_true",
                    help="send through the asyncio transport (releases the GIL per packet) instead of the GIL-holding path")
    args = ap.parse_args()
    if args.plain_send:
        import telephony.rtp

        telephony.rtp.FAST_SEND = False
    from config.telephony import SipConfig

    default_ms = SipConfig().gil_switch_interval_ms
    sys.setswitchinterval(args.switch_interval or (default_ms / 1000 if default_ms else sys.getswitchinterval()))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"switch interval {sys.getswitchinterval() * 1000:g} ms, {'plain' if args.plain_send else 'GIL-holding'} send, "
          f"{args.seconds:.0f} s per run "
          f"(cpu% includes the busy threads when there are any)")
    for calls in (int(c) for c in args.calls.split(",")):
        for busy in (int(b) for b in args.busy.split(",")):
            one(calls, busy, args.seconds, args.baseline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
