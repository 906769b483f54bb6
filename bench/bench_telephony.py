"""Many simultaneous calls with audio both ways against the Atiende endpoint, and pyVoIP 1.6.8 as the baseline.

    sudo .venv/bin/python bench/bench_telephony.py                  # 10,20,40,60,100 calls x {alone, neighbour} x both
    .venv/bin/python bench/bench_telephony.py --calls 60 --servers atiende --hold 12

Everything runs in a private network namespace (tests/sip_harness.py): Kamailio (deploy/kamailio/kamailio.cfg) is
the registrar and proxy; the server under test registers as `900` and answers every call, plays a prompt in a loop
and reads what comes in, and hangs up after --hold seconds; baresip instances (several calls each, `aufile`
microphone, `aubridge` player) place the calls through Kamailio with digest auth. dumpcap captures the RTP on lo:
inter-packet gaps and sender drift of the server's streams come from the capture's kernel timestamps. CPU and
memory come from /proc of the server process. "neighbour" = one CPU-bound process (`while True: pass`) on the box
for the whole run. pyVoIP runs from bench/.venv-pyvoip, created here on first use (pip install pyVoIP==1.6.8).

Goal (issue 5): all calls answered, gap p99 < 25 ms and |drift| < 0.05 % at 60 calls with the neighbour.
Results: a table on stdout and JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SELF = Path(__file__).resolve()
REPO = SELF.parent.parent
sys.path.insert(0, str(REPO))

from tests.sip_harness import (  # noqa: E402
    Baresip,
    HarnessError,
    Kamailio,
    NetNs,
    Proc,
    RtpCapture,
    make_test_audio,
    pad_wav,
    require_programs,
)

PYVOIP_VENV = REPO / "bench" / ".venv-pyvoip"
PYVOIP_VERSION = "1.6.8"
PASSWORD = "bench-900"
CALLER_PASSWORD = "bench-caller"
CALLS_PER_BARESIP = 10
SERVER_PORT = 5070
RTP_RANGE = (20000, 20999)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------------------------
# The Atiende side: `bench_telephony.py serve-atiende ...` runs inside the namespace


def serve_atiende(args: argparse.Namespace) -> None:
    import logging

    from config.telephony import Registration, SipConfig
    from telephony.endpoint import SipEndpoint
    from tests.sip_harness import wav_frames

    logging.basicConfig(level=logging.WARNING)
    prompt = wav_frames(Path(args.prompt))
    stats: list[dict[str, Any]] = []

    async def on_call(call: Any) -> None:
        rec: dict[str, Any] = {"answered": False, "frames_in": 0, "loud_frames_in": 0}
        stats.append(rec)
        await call.answer()
        rec["answered"] = True

        async def listen() -> None:
            async for frame in call.audio():
                rec["frames_in"] += 1
                if frame[1::2].translate(None, b"\x00\xff"):  # a high byte other than 0/-1: not silence
                    rec["loud_frames_in"] += 1

        async def speak() -> None:
            while not call.ended.is_set():
                await call.play(prompt, interrupt_on_dtmf=False)

        tasks = [asyncio.create_task(listen()), asyncio.create_task(speak())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.ended.wait(), args.hold)
        if not call.ended.is_set():
            await call.hangup()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        r = call.record
        rec.update(packets_sent=r.packets_sent, packets_received=r.packets_received, stalls=r.pacing_stalls,
                   end_reason=r.end_reason)

    async def loop_probe() -> None:
        """Diagnostics: event-loop lateness (5 ms sleeps) and GC pauses, printed when the server stops."""
        import gc

        gc_start: dict[str, float] = {}
        pauses: list[tuple[float, int, float]] = []

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                gc_start["t"] = time.perf_counter()
            else:
                pauses.append((time.monotonic(), info["generation"], 1000 * (time.perf_counter() - gc_start["t"])))

        gc.callbacks.append(on_gc)
        lags: list[tuple[float, float]] = []
        try:
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.005)
                lags.append((t, 1000 * (time.monotonic() - t - 0.005)))
        finally:
            gc.callbacks.remove(on_gc)
            worst = sorted(lags, key=lambda x: -x[1])[:8]
            print("loop lag worst (t, ms):", [(round(t % 1000, 3), round(ms, 1)) for t, ms in worst])
            print("gc pauses > 5 ms (t, gen, ms):", [(round(t % 1000, 3), g, round(ms, 1)) for t, g, ms in pauses if ms > 5])
            print("gc collections:", len(pauses), flush=True)

    async def run() -> None:
        cfg = SipConfig(host="127.0.0.1", port=args.port, rtp_port_min=RTP_RANGE[0], rtp_port_max=RTP_RANGE[1],
                        max_calls=args.max_calls, codecs=["PCMA", "PCMU"],
                        trusted_proxies=["127.0.0.1"],  # every call comes through Kamailio on loopback
                        registrations=[Registration(registrar=f"sip:127.0.0.1:{args.proxy_port}", user="900",
                                                    password=args.password, expires=600)])
        ep = SipEndpoint(cfg, on_call)
        if os.environ.get("ATIENDE_BENCH_DEBUG"):  # log every loop callback slower than 15 ms
            loop_ = asyncio.get_running_loop()
            loop_.set_debug(True)
            loop_.slow_callback_duration = 0.015
            logging.getLogger("asyncio").setLevel(logging.WARNING)
        await ep.start()
        if os.environ.get("ATIENDE_BENCH_GC_FREEZE"):
            import gc

            gc.collect()
            gc.freeze()
        probe = asyncio.create_task(loop_probe()) if os.environ.get("ATIENDE_BENCH_PROBE") else None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for _ in range(100):
            if ep.registrations.get("sip:900@127.0.0.1", {}).get("registered"):
                break
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        await stop.wait()
        write_json(Path(args.stats), stats)
        if probe is not None:
            probe.cancel()
        await ep.stop(grace_s=1.0)

    asyncio.run(run())


# ---------------------------------------------------------------------------------------------------------
# Measuring


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def start_neighbour() -> subprocess.Popen[bytes]:
    """The CPU-bound neighbour: one process spinning in pure Python for the whole run."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)


def ensure_pyvoip() -> Path:
    python = PYVOIP_VENV / "bin" / "python"
    probe = [str(python), "-c", f"import pyVoIP; assert pyVoIP.__version__ == '{PYVOIP_VERSION}'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing pyVoIP {PYVOIP_VERSION} into {PYVOIP_VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PYVOIP_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"pyVoIP=={PYVOIP_VERSION}"], check=True)
    subprocess.run(probe, check=True)
    return python


def set_autogroup_nice(pid: int, nice: int) -> None:
    """With autogroup scheduling (the kernel default), `nice` only ranks threads inside one session; the server
    runs in its own session, so its session's weight is what competes with the rest of the machine."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def proc_cpu_s(pid: int) -> float:
    """utime + stime of the process and its threads (not reaped children), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_runqueue_wait_s(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat), seconds:
    tells "starved by the machine" apart from "slow by itself"."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


def proc_rss_kb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def proc_threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


@dataclass
class RunResult:
    server: str
    calls: int
    neighbour: bool
    hold_s: float
    answered: int = 0
    closed: int = 0
    server_streams: int = 0
    client_streams: int = 0
    gap_p50_ms: float = 0.0
    gap_p99_ms: float = 0.0
    gap_max_ms: float = 0.0
    drift_median_pct: float = 0.0
    drift_max_abs_pct: float = 0.0
    packets_per_stream_s: float = 0.0
    baresip_gap_p99_ms: float = 0.0
    baresip_gap_max_ms: float = 0.0
    calls_hearing_caller: int = 0
    cpu_pct_per_call: float = 0.0
    cpu_pct_total: float = 0.0
    rss_base_mb: float = 0.0
    rss_kb_per_call: float = 0.0
    threads_peak: int = 0
    runqueue_wait_pct: float = 0.0  # server threads waiting for a CPU, % of wall time (summed over threads)
    loadgen_cpu_pct: float = 0.0  # all baresip instances together, % of one core
    loadavg_1m: float = 0.0  # the machine's load when the run ended (other work skews every number)
    errors: list[str] = field(default_factory=list)

    def meets_goal(self) -> bool:
        return (self.answered == self.calls and self.server_streams >= self.calls and self.gap_p99_ms < 25.0
                and self.drift_max_abs_pct < 0.05)


def analyse(result: RunResult, cap: RtpCapture, server_ports: tuple[int, int]) -> None:
    streams = cap.streams()
    server = [s for s in streams if server_ports[0] <= s.src[1] <= server_ports[1] and s.packets > 50]
    client = [s for s in streams if server_ports[0] <= s.dst[1] <= server_ports[1] and s.packets > 50]
    result.server_streams, result.client_streams = len(server), len(client)
    if server:
        gaps = np.concatenate([s.gaps_ms() for s in server])
        result.gap_p50_ms = round(float(np.percentile(gaps, 50)), 2)
        result.gap_p99_ms = round(float(np.percentile(gaps, 99)), 2)
        result.gap_max_ms = round(float(gaps.max()), 1)
        drifts = np.array([s.drift() for s in server]) * 100
        result.drift_median_pct = round(float(np.median(drifts)), 4)
        result.drift_max_abs_pct = round(float(np.abs(drifts).max()), 4)
        result.packets_per_stream_s = round(float(np.mean([s.packets / max(s.times[-1] - s.times[0], 1e-3)
                                                           for s in server])), 1)
    if client:
        cg = np.concatenate([s.gaps_ms() for s in client])
        result.baresip_gap_p99_ms = round(float(np.percentile(cg, 99)), 2)
        result.baresip_gap_max_ms = round(float(cg.max()), 1)


async def run_once(ns: NetNs, work: Path, server: str, calls: int, neighbour: bool, hold: float,
                   prompt: Path, mic: Path, pyvoip_python: Path | None, keep_pcap: bool = False,
                   nice: int = 0) -> RunResult:
    result = RunResult(server=server, calls=calls, neighbour=neighbour, hold_s=hold)
    tag = f"{server}-{calls}-{'n' if neighbour else 'a'}"
    run_dir = work / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    ns.reset_ports()  # the previous run's clients are gone
    stats_path = run_dir / "server-stats.json"
    if server == "atiende":
        argv = [sys.executable, str(SELF), "serve-atiende", "--port", str(SERVER_PORT),
                "--password", PASSWORD, "--prompt", str(prompt), "--hold", str(hold), "--stats", str(stats_path),
                "--max-calls", str(max(200, calls * 2))]
    else:
        assert pyvoip_python is not None
        argv = [str(pyvoip_python), str(REPO / "bench" / "pyvoip_server.py"), "--port", str(SERVER_PORT),
                "--password", PASSWORD, "--prompt", str(prompt), "--hold", str(hold), "--stats", str(stats_path)]
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    srv: Proc = ns.spawn(argv, name=server, log=run_dir / "server.log", cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    if nice:
        set_autogroup_nice(srv.pid, nice)
    hog: subprocess.Popen[bytes] | None = None
    callers: list[Baresip] = []
    cap: RtpCapture | None = None
    try:
        for _ in range(200):
            if "ready" in (srv.log.read_text() if srv.log and srv.log.exists() else ""):
                break
            if not srv.alive():
                raise HarnessError(f"{server} server exited\n{srv.tail()}")
            await asyncio.sleep(0.05)
        else:
            raise HarnessError(f"{server} server not ready\n{srv.tail()}")
        await asyncio.sleep(0.5)
        rss_base = proc_rss_kb(srv.pid)
        if neighbour:
            hog = start_neighbour()
        n_inst = -(-calls // CALLS_PER_BARESIP)
        for i in range(n_inst):
            b = Baresip(ns, run_dir / f"baresip{i}", wav=mic, user=f"caller{i}", record=False,
                        auth=(f"caller{i}", CALLER_PASSWORD), outbound="sip:127.0.0.1:5060",
                        max_calls=CALLS_PER_BARESIP + 2, rtp_ports=4 * CALLS_PER_BARESIP + 8, log=False)
            callers.append(await b.start())
        cap = await RtpCapture(ns, run_dir / "rtp.pcap", snaplen=64).start()
        cpu0, t0, wait0 = proc_cpu_s(srv.pid), time.monotonic(), proc_runqueue_wait_s(srv.pid)
        gen0 = sum(proc_cpu_s(b.proc.pid) for b in callers if b.proc)
        for k in range(calls):  # 50 call attempts per second, spread over the callers
            await callers[k % n_inst].dial("sip:900@127.0.0.1")
            await asyncio.sleep(0.02)
        rss_peak, threads_peak = rss_base, 0
        deadline = time.monotonic() + hold + 15
        while time.monotonic() < deadline:
            rss_peak = max(rss_peak, proc_rss_kb(srv.pid))
            threads_peak = max(threads_peak, proc_threads(srv.pid))
            if sum(b.count("CALL_CLOSED") for b in callers) >= calls:
                break
            await asyncio.sleep(0.25)
        cpu1, t1, wait1 = proc_cpu_s(srv.pid), time.monotonic(), proc_runqueue_wait_s(srv.pid)
        result.runqueue_wait_pct = round(100 * (wait1 - wait0) / (t1 - t0), 1)
        gen1 = sum(proc_cpu_s(b.proc.pid) for b in callers if b.proc)
        result.loadgen_cpu_pct = round(100 * (gen1 - gen0) / (t1 - t0), 1)
        await cap.stop()
        result.answered = sum(b.count("CALL_ESTABLISHED") for b in callers)
        result.closed = sum(b.count("CALL_CLOSED") for b in callers)
        result.cpu_pct_total = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
        result.cpu_pct_per_call = round(100 * (cpu1 - cpu0) / max(result.answered, 1) / (t1 - t0), 2)
        result.rss_base_mb = round(rss_base / 1024, 1)
        result.rss_kb_per_call = round((rss_peak - rss_base) / max(result.answered, 1), 1)
        result.threads_peak = threads_peak
        result.loadavg_1m = round(os.getloadavg()[0], 1)
        analyse(result, cap, RTP_RANGE)
    except HarnessError as exc:
        result.errors.append(str(exc)[:2000])
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        for b in callers:
            with contextlib.suppress(Exception):
                await b.stop()
        if cap is not None and cap.proc is not None:
            await cap.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(srv.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(srv.popen.wait, 10)
        ns.forget(srv)
    if stats_path.exists():
        per_call = json.loads(stats_path.read_text())
        key = "loud_frames_in" if server == "atiende" else "loud_bytes"
        result.calls_hearing_caller = sum(1 for c in per_call if c.get(key, 0) > 0)
        result.errors += sorted({c["error"] for c in per_call if c.get("error")})[:5]
    if not keep_pcap:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "rtp.pcap").unlink()  # large; the numbers are in the JSON
    return result


def print_table(results: list[RunResult]) -> None:
    cols = ["server", "calls", "neigh", "answered", "hear", "gap p50", "gap p99", "gap max", "drift med%", "drift max%",
            "pps", "cpu%/call", "cpu% tot", "KB/call", "thr", "rq wait%", "gen cpu%", "load1m", "goal"]
    print(" | ".join(f"{c:>9}" for c in cols))
    for r in results:
        row = [r.server, r.calls, "yes" if r.neighbour else "no", f"{r.answered}/{r.calls}",
               f"{r.calls_hearing_caller}", r.gap_p50_ms, r.gap_p99_ms, r.gap_max_ms, r.drift_median_pct,
               r.drift_max_abs_pct, r.packets_per_stream_s, r.cpu_pct_per_call, r.cpu_pct_total, r.rss_kb_per_call,
               r.threads_peak, r.runqueue_wait_pct, r.loadgen_cpu_pct, r.loadavg_1m, "ok" if r.meets_goal() else "-"]
        print(" | ".join(f"{x!s:>9}" for x in row), flush=True)
        for e in r.errors:
            print(f"    error: {e.splitlines()[0][:300]}")


def markdown_table(path: Path) -> str:
    """A results JSON as a Markdown table (for bench/README.md)."""
    data = json.loads(path.read_text())
    head = ("| server | calls | neighbour | answered | heard caller | gap p50/p99/max ms | drift median/max % | pps "
            "| CPU %/call (total) | KB/call | threads | run-queue wait % | load |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in data["results"]:
        lines.append(
            f"| {r['server']} | {r['calls']} | {'yes' if r['neighbour'] else 'no'} | {r['answered']}/{r['calls']} "
            f"| {r['calls_hearing_caller']} | {r['gap_p50_ms']} / {r['gap_p99_ms']} / {r['gap_max_ms']} "
            f"| {r['drift_median_pct']} / {r['drift_max_abs_pct']} | {r['packets_per_stream_s']} "
            f"| {r['cpu_pct_per_call']} ({r['cpu_pct_total']}) | {r['rss_kb_per_call']} | {r['threads_peak']} "
            f"| {r.get('runqueue_wait_pct', '')} | {r['loadavg_1m']} |")
    return "\n".join(lines)


async def bench(args: argparse.Namespace) -> int:
    missing = require_programs("baresip", "kamailio", "dumpcap", "sox", "espeak-ng", "ip")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    servers = args.servers.split(",")
    pyvoip = ensure_pyvoip() if "pyvoip" in servers else None
    sizes = [int(x) for x in args.calls.split(",")]
    modes = {"both": [False, True], "alone": [False], "only": [True]}[args.neighbour]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(args.workdir or f"/tmp/atiende-bench-{stamp}")
    audio = make_test_audio(work / "audio")
    prompt = audio.prompt
    mic = pad_wav(audio.caller, work / "audio" / "mic.wav", before=0.2, after=args.hold + 60)
    results: list[RunResult] = []
    with NetNs(prefix="atiende-bench") as ns:
        users = {"900": PASSWORD} | {f"caller{i}": CALLER_PASSWORD for i in range(64)}
        # both servers behind the same proxy; the flag lets pyVoIP take baresip calls at all (see kamailio.cfg)
        kam = await Kamailio(ns, work / "kamailio", users, flags=["WITH_LEGACY_UA_FIXES"]).start()
        try:
            for calls in sizes:
                for neighbour in modes:
                    for server in servers:
                        r = await run_once(ns, work, server, calls, neighbour, args.hold, prompt, mic, pyvoip,
                                           args.keep_pcap, args.nice)
                        results.append(r)
                        print_table([r])
        finally:
            await kam.stop()
    print("\nsummary (gap/drift from dumpcap on lo: the server's RTP streams; hear = calls where the server got the "
          "caller's audio; cpu% of one core; KB/call = RSS growth at peak / calls)")
    print_table(results)
    out = Path(args.out or REPO / "bench" / "results" / f"telephony-{stamp}.json")
    write_json(out, {"hold_s": args.hold, "cpus": os.cpu_count(), "results": [asdict(r) for r in results]})
    print(f"\nJSON: {out}\nwork dir (logs): {work}")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("serve-atiende", help="(internal) the Atiende server under test")
    s.add_argument("--port", type=int, default=SERVER_PORT)
    s.add_argument("--proxy-port", type=int, default=5060)
    s.add_argument("--password", required=True)
    s.add_argument("--prompt", required=True)
    s.add_argument("--hold", type=float, default=12.0)
    s.add_argument("--stats", required=True)
    s.add_argument("--max-calls", type=int, default=200)
    t = sub.add_parser("table", help="print a results JSON as a Markdown table")
    t.add_argument("json")
    p.add_argument("--calls", default="10,20,40,60,100", help="comma-separated numbers of simultaneous calls")
    p.add_argument("--servers", default="atiende,pyvoip", help="atiende, pyvoip or both")
    p.add_argument("--neighbour", choices=["both", "alone", "only"], default="both",
                   help="run each size without and with a CPU-bound neighbour process")
    p.add_argument("--hold", type=float, default=12.0, help="seconds each call lasts (the server hangs up)")
    p.add_argument("--out", help="JSON results path (default bench/results/telephony-<time>.json)")
    p.add_argument("--workdir", help="logs and captures (default /tmp/atiende-bench-<time>)")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of the server under test and of its autogroup (same for both servers; negative needs root)")
    p.add_argument("--keep-pcap", action="store_true", help="keep each run's RTP capture in the work dir")
    args = p.parse_args()
    if args.cmd == "serve-atiende":
        serve_atiende(args)
        return
    if args.cmd == "table":
        print(markdown_table(Path(args.json)))
        return
    raise SystemExit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
