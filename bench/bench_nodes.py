"""One node vs two nodes behind Kamailio's dispatcher: IVR call setup rate and simultaneous calls (issue 15).

    sudo .venv/bin/python bench/bench_nodes.py                  # 2, 5, 10, 20 calls/s for 10 s; 20, 40, 60 held 10 s
    sudo .venv/bin/python bench/bench_nodes.py --rates 5 --seconds 20 --concurrent 60 --hold 20
    sudo .venv/bin/python bench/bench_nodes.py --configs 2      # only the two-node configuration

What one run does, in a private network namespace that only has `lo` (tests/sip_harness.py), with the pieces of
tests/test_two_nodes_e2e.py (its NODES ports, `_kamailio` with deploy/kamailio/dispatcher.cfg, the per-node env):

- one PrivateRedis (AOF, fsync always, as the service runs it) inside the namespace, shared by the nodes (one key
  prefix, ATIENDE_REDIS__PREFIX, as in the test);
- `atiende run` as node-a and node-b, and one Kamailio per configuration (deploy/kamailio/dispatcher.cfg, round
  robin, OPTIONS-probed): configuration "1 node" = a Kamailio on :5080 whose dispatcher list has node-a only;
  "2 nodes" = a Kamailio on :5084 listing node-a and node-b. Callers always dial the line through a Kamailio
  (`sip:900@127.0.0.1:<port>`, the carrier's path), never a node directly. Both configurations stay up for the whole
  run and take turns at each load level (the order alternating from level to level), so the pair of rows at a level
  met the same minute of the machine's other load; during a one-node load node-b idles (its CPU counts in `others`);
- the nodes run the line's default IVR with `--clock` on a Monday 10:00 (open) and ATIENDE_SPEECH__STT_WORKERS=1;
- callers are baresip instances (one call at a time each, so every call's timing is its own); a caller's microphone
  is a 0.5 s 440 Hz tone then silence (recognition gets no words: the speech path stays light, no intent is routed);
- one warm-up call per node before the loads (not counted).

Loads, per configuration:

- A, call setup rate (`--rates`, `--seconds`): calls arrive at a fixed rate (open loop: a call is placed at its due
  time whether or not earlier ones were answered); each caller hangs up `--call-seconds` (3) after the answer, when
  its microphone file ends. Reported: answered/attempted, setup time = `dial` sent to baresip -> its
  CALL_ESTABLISHED event (the INVITE through Kamailio to a node, its 200 OK back) p50/p95/p99/max, failures (503s counted
  apart), calls answered per node (each node's "call answered" log lines in the window), and CPU;
- B, concurrency (`--concurrent`, `--hold`): N calls placed `--ramp` per second; once all are answered (or failed),
  every call stays up `--hold` seconds listening to the IVR (welcome, question, re-prompts), then the bench hangs
  them up. Reported: answered, stayed up (no hang-up from either side during the hold), setup p50/p95/max, each
  node's `atiende_active_calls` gauge half-way through the hold (/metrics, admin API key), and CPU over the hold.

CPU columns are % of one core over the window, from /proc/<pid>/stat: each node's process tree (the service and its
speech worker), Kamailio's processes, Redis, the baresip callers, `others` (the rest of the machine: other
sessions, this script) and `machine` (all of it; at cores x 100 % the box was saturated and every figure in that row
is what the processes got, not what they would have used). On a 2-core box the two nodes share the same 2 cores
with the callers, Kamailio and Redis: what two nodes show is the dispatcher spreading calls and the load per node,
not doubled capacity.

Bounded: each load has a deadline, each call a setup timeout (`--setup-timeout`), the run `--max-minutes`. Nothing
is asserted: the table is the output (and JSON in bench/results/nodes-<time>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SELF = Path(__file__).resolve()
REPO = SELF.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(SELF.parent))

from bench_ivr_load import cpu_s, machine_cpu_s, tree, uptime  # noqa: E402
from benchstats import summary  # noqa: E402

import tests.test_two_nodes_e2e as two_nodes  # noqa: E402
from core.redis_server import PrivateRedis  # noqa: E402
from tests.sip_harness import (  # noqa: E402
    AtiendeService,
    Baresip,
    HarnessError,
    NetNs,
    Proc,
    read_wav,
    require_programs,
    tone_wav,
    write_wav,
)

RATE = 8000
CLOCK = "2026-11-23T10:00:00+01:00"  # a Monday, 10:00: the line is open
KAMAILIO_PORTS = (two_nodes.KAMAILIO_PORT, two_nodes.KAMAILIO_PORT + 4)  # one Kamailio per configuration
KEY = "bench-nodes-admin-key-0123456789"  # the nodes' admin API key (for /metrics), given by the bench, nowhere else
TONE_S = 0.5


# ---- callers ------------------------------------------------------------------------------------


class StampedEvents(list[dict[str, Any]]):
    """baresip's event list, each event stamped with the monotonic time it arrived (`t`)."""

    def append(self, item: dict[str, Any]) -> None:
        item["t"] = time.monotonic()
        super().append(item)


@dataclass
class CallRec:
    dial_t: float
    setup_s: float | None = None  # dial -> CALL_ESTABLISHED
    closed_t: float | None = None
    failure: str = ""  # why it was not answered ("" when it was)
    reason: str = ""  # CALL_CLOSED's param
    skipped: bool = False  # no free caller at its due time

    @property
    def answered(self) -> bool:
        return self.setup_s is not None


async def setup_call(phone: Baresip, line: str, within: float) -> tuple[CallRec, int]:
    """Dial the line; return once the call is answered, refused or timed out (and the events index it started at)."""
    start = len(phone.events)
    rec = CallRec(dial_t=time.monotonic())
    try:
        await phone.dial(line)
        ev = await phone.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", within=within, start=start)
    except HarnessError as exc:
        rec.failure = "no answer" if "within" in str(exc) else "dial refused"
        with contextlib.suppress(HarnessError):
            await phone.hangup()
        return rec, start
    if ev["type"] == "CALL_ESTABLISHED":
        rec.setup_s = ev["t"] - rec.dial_t
    else:
        rec.closed_t, rec.reason = ev["t"], str(ev.get("param", ""))
        rec.failure = "503" if "503" in rec.reason else (rec.reason or "closed")
    return rec, start


async def finish_call(phone: Baresip, rec: CallRec, start: int, within: float, hangup: bool) -> None:
    """Until the call is closed (hanging it up first when `hangup`); a caller left with a call is hung up."""
    if rec.closed_t is not None:
        return
    if hangup:
        with contextlib.suppress(HarnessError):
            await phone.hangup()
    try:
        ev = await phone.wait_event("CALL_CLOSED", within=within, start=start)
        rec.closed_t, rec.reason = ev["t"], str(ev.get("param", ""))
    except HarnessError:
        with contextlib.suppress(HarnessError):
            await phone.hangup()
            ev = await phone.wait_event("CALL_CLOSED", within=5, start=start)
            rec.closed_t, rec.reason = ev["t"], str(ev.get("param", ""))


def closed_since(phone: Baresip, start: int, before: float) -> dict[str, Any] | None:
    for ev in phone.events[start:]:
        if ev.get("type") == "CALL_CLOSED" and ev["t"] <= before:
            return ev
    return None


def mic(path: Path, seconds: float) -> Path:
    """The callers' microphone: a 0.5 s tone, then silence up to `seconds` (baresip hangs up when it ends)."""
    tone = tone_wav(path.with_name("tone.wav"), TONE_S)
    pcm = np.concatenate([read_wav(tone), np.zeros(max(0, int((seconds - TONE_S) * RATE)), "<i2")])
    tmp = write_wav(path.with_name(path.name + ".new.wav"), pcm)
    os.replace(tmp, path)  # aufile opens the file at each call: the next calls get the new one
    return path


# ---- the cluster --------------------------------------------------------------------------------


@contextlib.contextmanager
def dispatcher(count: int, port: int) -> Iterator[None]:
    """tests/test_two_nodes_e2e.py's `_kamailio` lists its module's NODES and listens on its KAMAILIO_PORT: list only
    the first `count` nodes, on `port`."""
    saved = two_nodes.NODES, two_nodes.KAMAILIO_PORT
    two_nodes.NODES = saved[0][:count]  # type: ignore[assignment]  # a one-entry list is the point
    two_nodes.KAMAILIO_PORT = port
    try:
        yield
    finally:
        two_nodes.NODES, two_nodes.KAMAILIO_PORT = saved


def http_text(url: str) -> str:
    req = urllib.request.Request(url, headers={"X-API-Key": KEY})
    with urllib.request.urlopen(req, timeout=5) as r:
        return str(r.read().decode())


async def active_calls(node: AtiendeService) -> int:
    with contextlib.suppress(OSError):
        for line in (await asyncio.to_thread(http_text, f"{node.http_url}/metrics")).splitlines():
            if line.startswith("atiende_active_calls "):
                return int(float(line.split()[1]))
    return -1


def log_path(node: AtiendeService) -> Path:
    return node.workdir / "atiende.log"


def log_size(node: AtiendeService) -> int:
    p = log_path(node)
    return p.stat().st_size if p.exists() else 0


def answered_in_log(node: AtiendeService, offset: int) -> int:
    with log_path(node).open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").count('"msg": "call answered"')


@dataclass
class Config:
    name: str
    nodes: list[int]  # indexes in Cluster.nodes: the ones in its dispatcher list
    kamailio: Proc
    port: int

    @property
    def line(self) -> str:
        return f"sip:900@127.0.0.1:{self.port}"


@dataclass
class Cluster:
    ns: NetNs
    nodes: list[AtiendeService]
    configs: list[Config]
    redis_pid: int
    pool: asyncio.Queue[Baresip]
    phones: list[Baresip]
    mic: Path


@dataclass
class Snap:
    t: float
    nodes: list[float]
    kamailios: list[float]
    redis: float
    callers: float
    machine: float


def snap(c: Cluster) -> Snap:
    nodes = [cpu_s(tree(n.proc.pid)) if n.proc else 0.0 for n in c.nodes]
    return Snap(time.monotonic(), nodes, [cpu_s(tree(k.kamailio.pid)) for k in c.configs], cpu_s([c.redis_pid]),
                cpu_s([p.proc.pid for p in c.phones if p.proc], reaped=False), machine_cpu_s())


def cpu_pct(c: Cluster, cfg: Config, a: Snap, b: Snap) -> dict[str, Any]:
    """% of one core over a..b: the configuration's nodes and Kamailio, Redis, callers; `others` = the rest of the
    machine (the other configuration's idle node and Kamailio included)."""
    dt = max(b.t - a.t, 1e-3)
    nodes = [100 * (b.nodes[i] - a.nodes[i]) / dt for i in cfg.nodes]
    k = c.configs.index(cfg)
    kam, red, cal = (100 * (b.kamailios[k] - a.kamailios[k]) / dt, 100 * (b.redis - a.redis) / dt,
                     100 * (b.callers - a.callers) / dt)
    machine = 100 * (b.machine - a.machine) / dt
    return {"nodes": [round(x, 1) for x in nodes], "kamailio": round(kam, 1), "redis": round(red, 1),
            "callers": round(cal, 1), "others": round(machine - sum(nodes) - kam - red - cal, 1),
            "machine": round(machine, 1),
            "window_s": round(dt, 1)}


async def until_idle(c: Cluster, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(n == 0 for n in [await active_calls(node) for node in c.nodes]):
            return
        await asyncio.sleep(0.25)


# ---- the loads ----------------------------------------------------------------------------------


@dataclass
class Result:
    config: str
    load: str  # "rate" or "concurrent"
    level: float  # calls/s or simultaneous calls
    attempted: int = 0
    answered: int = 0
    stayed_up: int | None = None
    failed: int = 0
    failed_503: int = 0
    skipped: int = 0  # no free caller at the due time (the bench's limit, not the service's)
    failures: dict[str, int] = field(default_factory=dict)
    early_close: dict[str, int] = field(default_factory=dict)
    setup_ms: dict[str, float] = field(default_factory=dict)
    per_node_answered: list[int] = field(default_factory=list)
    per_node_active: list[int] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)
    offered_rate: float = 0.0
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def tally(res: Result, recs: list[CallRec]) -> None:
    res.attempted = sum(1 for r in recs if not r.skipped)
    res.skipped = sum(1 for r in recs if r.skipped)
    res.answered = sum(1 for r in recs if r.answered)
    bad = [r for r in recs if not r.skipped and not r.answered]
    res.failed = len(bad)
    res.failed_503 = sum(1 for r in bad if r.failure == "503")
    for r in bad:
        res.failures[r.failure] = res.failures.get(r.failure, 0) + 1
    s = summary([1000 * r.setup_s for r in recs if r.setup_s is not None])
    res.setup_ms = {k: round(v, 1) for k, v in s.items() if not math.isnan(v)}


async def load_rate(c: Cluster, cfg: Config, rate: float, args: argparse.Namespace) -> Result:
    res = Result(cfg.name, "rate", rate)
    await asyncio.to_thread(mic, c.mic, args.call_seconds)
    count = max(1, round(rate * args.seconds))
    nodes = [c.nodes[i] for i in cfg.nodes]
    offsets = [log_size(n) for n in nodes]
    t_start = time.monotonic() + 0.2
    s0 = snap(c)

    async def one(k: int) -> CallRec:
        await asyncio.sleep(max(0.0, t_start + k / rate - time.monotonic()))
        try:
            phone = c.pool.get_nowait()
        except asyncio.QueueEmpty:
            return CallRec(dial_t=time.monotonic(), skipped=True)
        try:
            rec, start = await setup_call(phone, cfg.line, args.setup_timeout)
            if rec.answered:
                await finish_call(phone, rec, start, args.call_seconds + 20, hangup=False)
            return rec
        finally:
            c.pool.put_nowait(phone)

    tasks = [asyncio.create_task(one(k)) for k in range(count)]
    deadline = args.seconds + args.call_seconds + args.setup_timeout + 40
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for t in pending:
        t.cancel()
    if pending:
        res.errors.append(f"{len(pending)} calls still running at the load's deadline ({deadline:.0f} s)")
    s1 = snap(c)
    recs = [t.result() for t in tasks if t in done and not t.cancelled() and t.exception() is None]
    res.errors += [f"{type(t.exception()).__name__}: {t.exception()}" for t in tasks
                   if t in done and not t.cancelled() and t.exception() is not None][:3]
    tally(res, recs)
    dials = sorted(r.dial_t for r in recs if not r.skipped)
    res.offered_rate = round((len(dials) - 1) / (dials[-1] - dials[0]), 2) if len(dials) > 1 else 0.0
    res.per_node_answered = [answered_in_log(n, off) for n, off in zip(nodes, offsets, strict=True)]
    res.cpu = cpu_pct(c, cfg, s0, s1)
    res.loadavg = os.getloadavg()
    res.wall_s = round(s1.t - s0.t, 1)
    return res


async def load_concurrent(c: Cluster, cfg: Config, n: int, args: argparse.Namespace) -> Result:
    res = Result(cfg.name, "concurrent", n)
    # long enough that no caller's file ends during the hold: the bench hangs up
    await asyncio.to_thread(mic, c.mic, n / args.ramp + args.setup_timeout + args.hold + 30)
    nodes = [c.nodes[i] for i in cfg.nodes]
    offsets = [log_size(node) for node in nodes]
    phones: list[Baresip] = []
    for _ in range(n):
        try:
            phones.append(c.pool.get_nowait())
        except asyncio.QueueEmpty:
            break
    res.skipped = n - len(phones)
    recs: list[CallRec] = []
    s0 = s1 = snap(c)
    t_start = time.monotonic() + 0.2

    async def one(k: int, phone: Baresip) -> tuple[CallRec, int]:
        await asyncio.sleep(max(0.0, t_start + k / args.ramp - time.monotonic()))
        return await setup_call(phone, cfg.line, args.setup_timeout)

    try:
        setups = await asyncio.gather(*[one(k, p) for k, p in enumerate(phones)])
        recs = [r for r, _ in setups]
        s0 = snap(c)
        await asyncio.sleep(args.hold / 2)
        res.per_node_active = [await active_calls(node) for node in nodes]
        await asyncio.sleep(max(0.0, s0.t + args.hold - time.monotonic()))
        s1 = snap(c)
        res.stayed_up = 0
        for (rec, start), phone in zip(setups, phones, strict=True):
            if not rec.answered:
                continue
            ev = closed_since(phone, start, s1.t)
            if ev is None:
                res.stayed_up += 1
            else:
                why = str(ev.get("param", "")) or "closed"
                res.early_close[why] = res.early_close.get(why, 0) + 1
        await asyncio.gather(*[finish_call(p, r, st, 10, hangup=True) for (r, st), p in zip(setups, phones, strict=True)])
    finally:
        for p in phones:
            c.pool.put_nowait(p)
    tally(res, recs)
    res.attempted, res.skipped = len(recs), n - len(recs)
    res.per_node_answered = [answered_in_log(node, off) for node, off in zip(nodes, offsets, strict=True)]
    res.cpu = cpu_pct(c, cfg, s0, s1)
    res.loadavg = os.getloadavg()
    res.wall_s = round(s1.t - s0.t, 1)
    return res


# ---- output -------------------------------------------------------------------------------------


RATE_COLS = ["nodes", "rate/s (offered)", "answered", "failed (503)", "setup p50 ms", "p95", "p99", "max",
             "answered per node", "node CPU %", "kamailio %", "redis %", "callers %", "others %", "machine %", "load1"]
CONC_COLS = ["nodes", "calls", "answered", "stayed up", "setup p50 ms", "p95", "max", "active per node (gauge)",
             "node CPU % (hold)", "kamailio %", "redis %", "callers %", "others %", "machine %", "load1"]


def _ms(r: Result, k: str) -> str:
    v = r.setup_ms.get(k)
    return "-" if v is None else f"{v:.0f}"


def _split(xs: list[Any]) -> str:
    return " / ".join(str(x) for x in xs)


def row(r: Result) -> list[str]:
    cpu = r.cpu
    common = [_split([f"{x:.0f}" for x in cpu.get("nodes", [])]), f"{cpu.get('kamailio', 0):.0f}",
              f"{cpu.get('redis', 0):.0f}", f"{cpu.get('callers', 0):.0f}", f"{cpu.get('others', 0):.0f}",
              f"{cpu.get('machine', 0):.0f}",
              f"{r.loadavg[0]:.2f}"]
    if r.load == "rate":
        return [r.config, f"{r.level:g} ({r.offered_rate:g})", f"{r.answered}/{r.attempted}",
                f"{r.failed} ({r.failed_503})", _ms(r, "p50"), _ms(r, "p95"), _ms(r, "p99"), _ms(r, "max"),
                _split(r.per_node_answered), *common]
    return [r.config, f"{r.level:g}", f"{r.answered}/{r.attempted}", f"{r.stayed_up}", _ms(r, "p50"), _ms(r, "p95"),
            _ms(r, "max"), _split(r.per_node_active), *common]


def table(cols: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(x) + " |" for x in rows])


def notes(r: Result) -> list[str]:
    out = []
    if r.skipped:
        out.append(f"{r.skipped} calls not placed: no free caller (raise --callers)")
    if r.failures:
        out.append(f"failures: {r.failures}")
    if r.early_close:
        out.append(f"closed during the hold: {r.early_close}")
    out += [f"error: {e[:300]}" for e in r.errors]
    return [f"    {r.config}, {r.load} {r.level:g}: {x}" for x in out]


# ---- the run ------------------------------------------------------------------------------------


async def start_callers(ns: NetNs, work: Path, wav: Path, count: int) -> list[Baresip]:
    phones = [Baresip(ns, work / f"caller{i}", wav=wav, user=f"c{i}", record=False, max_calls=2, rtp_ports=8,
                      log=False) for i in range(count)]
    for p in phones:
        p.events = StampedEvents()
    for i in range(0, count, 16):
        await asyncio.gather(*[p.start() for p in phones[i:i + 16]])
    return phones


async def start_cluster(ns: NetNs, work: Path, configs: list[int], redis: PrivateRedis, phones: list[Baresip],
                        wav: Path, args: argparse.Namespace) -> Cluster:
    """Every node any configuration lists (fresh processes, one Redis key prefix), one Kamailio per configuration
    listing its first N nodes, then one warm-up call per node through each configuration (not counted)."""
    prefix = f"bn{uuid.uuid4().hex[:8]}"
    c = Cluster(ns, [], [], 0, asyncio.Queue(), phones, wav)
    try:
        for i, (sip, http, rtp) in enumerate(two_nodes.NODES[:max(configs)]):
            env = {"ATIENDE_REDIS__PREFIX": prefix, "ATIENDE_SERVICE__NODE_ID": f"node-{'ab'[i]}",
                   "ATIENDE_SIP__TRUSTED_PROXIES": "['127.0.0.1']", "ATIENDE_DESK__DEMO": "true",
                   "ATIENDE_DESK__API_KEYS": f"[{{name: bench, key: {KEY}, roles: [admin]}}]",
                   "ATIENDE_DESK__USERS": "[]", "ATIENDE_SPEECH__STT_WORKERS": "1"}
            env |= dict(kv.split("=", 1) for kv in args.env)
            svc = AtiendeService(ns, work / f"node-{'ab'[i]}", sip_port=sip, http_port=http, rtp_ports=rtp,
                                 clock=CLOCK, redis_url=redis.url, env=env)
            c.nodes.append(svc)
            await svc.start(within=60)
        for svc in c.nodes:  # the speech engine loads in the background after /healthz: wait for it
            for _ in range(600):
                if "speech-to-text engine" in log_path(svc).read_text(errors="replace"):
                    break
                await asyncio.sleep(0.1)
        for count, port in zip(configs, KAMAILIO_PORTS, strict=False):
            with dispatcher(count, port):
                kam = await two_nodes._kamailio(ns, work / f"kamailio-{count}")
            c.configs.append(Config(f"{count} node" + ("s" if count > 1 else ""), list(range(count)), kam, port))
        for p in phones:
            c.pool.put_nowait(p)
        assert redis.proc is not None
        c.redis_pid = redis.proc.pid
        await asyncio.sleep(3.0)  # the dispatchers' first OPTIONS probes
        await asyncio.to_thread(mic, wav, args.call_seconds)
        for cfg in c.configs:
            for _ in cfg.nodes:  # round robin: one call per node
                phone = await c.pool.get()
                rec, start = await setup_call(phone, cfg.line, args.setup_timeout)
                await finish_call(phone, rec, start, args.call_seconds + 20, hangup=False)
                c.pool.put_nowait(phone)
                if not rec.answered:
                    print(f"    {cfg.name}: warm-up call not answered: {rec.failure}", flush=True)
        await until_idle(c)
        return c
    except BaseException:
        await stop_cluster(c)
        raise


async def stop_cluster(c: Cluster) -> None:
    for cfg in c.configs:
        await asyncio.to_thread(c.ns.forget, cfg.kamailio)
    for svc in c.nodes:
        with contextlib.suppress(Exception):
            await svc.stop()


async def bench(args: argparse.Namespace, ns: NetNs, redis: PrivateRedis, work: Path) -> list[Result]:
    rates = [float(x) for x in args.rates.split(",") if x]
    concurrent = [int(x) for x in args.concurrent.split(",") if x]
    configs = [int(x) for x in args.configs.split(",")][:len(KAMAILIO_PORTS)]
    needed = max([*concurrent, math.ceil(max(rates or [0]) * (args.call_seconds + 3))]) + 4
    count = args.callers or min(needed, 150)
    wav = mic(work / "mic.wav", args.call_seconds)
    t0 = time.monotonic()
    phones = await start_callers(ns, work, wav, count)
    print(f"{count} baresip callers started in {time.monotonic() - t0:.1f} s", flush=True)
    stop_at = time.monotonic() + args.max_minutes * 60
    results: list[Result] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = REPO / "bench" / "results" / f"nodes-{stamp}.json"
    try:
        t1 = time.monotonic()
        try:
            c = await start_cluster(ns, work, configs, redis, phones, wav, args)
        except HarnessError as exc:
            print(f"could not start the nodes and Kamailio: {str(exc)[:1500]}", flush=True)
            return results
        print(f"{len(c.nodes)} node(s), {len(c.configs)} Kamailio(s) and warm-up in {time.monotonic() - t1:.1f} s",
              flush=True)
        try:
            plan: list[tuple[str, float]] = [("rate", r) for r in rates] + [("concurrent", n) for n in concurrent]
            for step, (kind, level) in enumerate(plan):
                # the configurations take turns at each level (order alternating), so both meet the same minute of
                # this shared machine's other load
                for cfg in (c.configs if step % 2 == 0 else c.configs[::-1]):
                    if time.monotonic() > stop_at:
                        print("time budget (--max-minutes) reached; stopping", flush=True)
                        break
                    if kind == "rate":
                        r = await load_rate(c, cfg, level, args)
                    else:
                        r = await load_concurrent(c, cfg, int(level), args)
                    results.append(r)
                    cols = RATE_COLS if kind == "rate" else CONC_COLS
                    print(table(cols, [row(r)]).splitlines()[-1], flush=True)
                    for line in notes(r):
                        print(line, flush=True)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps([asdict(x) for x in results], indent=1))
                    await until_idle(c)
                    await asyncio.sleep(1.0)
        finally:
            await stop_cluster(c)
    finally:
        for p in phones:
            with contextlib.suppress(Exception):
                await p.stop()
    print(f"json: {out}; work dir: {work}", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--configs", default="1,2", help="nodes behind each dispatcher, comma-separated (1,2; at most 2)")
    p.add_argument("--rates", default="2,5,10,20", help="load A: arrival rates, calls/s, comma-separated ('' for none)")
    p.add_argument("--seconds", type=float, default=10.0, help="load A: how long calls arrive at each rate")
    p.add_argument("--call-seconds", type=float, default=3.0, help="load A: a caller hangs up this long after the answer")
    p.add_argument("--concurrent", default="20,40,60", help="load B: simultaneous calls, comma-separated ('' for none)")
    p.add_argument("--hold", type=float, default=10.0, help="load B: seconds all calls stay up together")
    p.add_argument("--ramp", type=float, default=10.0, help="load B: calls placed per second while ramping up")
    p.add_argument("--setup-timeout", type=float, default=15.0, help="a call not answered within this is a failure")
    p.add_argument("--callers", type=int, default=0, help="baresip instances (default: what the loads need, <= 150)")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for every node (repeatable)")
    p.add_argument("--workdir", help="logs and WAVs (default /tmp/bench-nodes-<time>)")
    p.add_argument("--max-minutes", type=float, default=15.0, help="stop starting loads after this long")
    args = p.parse_args()
    reason = require_programs("baresip", "kamailio", "sox", "ip", "redis-server")
    if reason or os.geteuid() != 0:
        print(reason or "needs root (ip netns)", file=sys.stderr)
        raise SystemExit(2)
    work = Path(args.workdir or f"/tmp/bench-nodes-{time.strftime('%Y%m%d-%H%M%S')}")
    work.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 0
    before = uptime()
    print(f"uptime before: {before}")
    print(f"machine: {cores} cores; every node, Kamailio, Redis and the callers share them"
          + (" (two nodes here do not double capacity: they split the same cores)" if cores <= 2 else ""))
    print(f"callers: baresip through Kamailio (sip:900@127.0.0.1:{KAMAILIO_PORTS[0]} lists node-a, "
          f":{KAMAILIO_PORTS[1]} node-a and node-b); microphone = {TONE_S} s 440 Hz tone then silence, so the IVR "
          "hears no words; load A hangs up when the file ends, load B is hung up by the bench after the hold")
    print("nodes: `atiende run`, the line's default IVR, ATIENDE_SPEECH__STT_WORKERS=1, one shared Redis "
          "(AOF, fsync always); the configurations take turns at each level", flush=True)
    results: list[Result] = []
    with NetNs(workdir=work) as ns:
        with ns.entered():  # Redis listens inside the namespace; the main thread forks it (its death signal)
            redis = PrivateRedis(work / "redis")
            redis.start()
        try:
            results = asyncio.run(bench(args, ns, redis, work))
        finally:
            redis.stop()
    for kind, cols, title in (("rate", RATE_COLS, "Load A, call setup rate"),
                              ("concurrent", CONC_COLS, f"Load B, simultaneous calls held {args.hold:g} s")):
        rows = [row(r) for r in results if r.load == kind]
        if rows:
            print(f"\n{title} (CPU: % of one core; per-node figures node-a / node-b):\n")
            print(table(cols, rows))
            for r in results:
                if r.load == kind:
                    for line in notes(r):
                        print(line)
    print(f"\nuptime before: {before}\nuptime after:  {uptime()}")


if __name__ == "__main__":
    main()
