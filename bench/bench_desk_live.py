"""Open desk streams against one node: live event delivery, Redis connections, memory and CPU (issue 22).

    .venv/bin/python bench/bench_desk_live.py                       # the curve: 100, 300, 1000 streams
    .venv/bin/python bench/bench_desk_live.py --streams 1000 --rate 50 --duration 20

One run per stream count: a private redis-server (AOF, fsync always, like the service's own), users and an API
key made in it, then `atiende run --no-sip` on a free loopback port (a separate process, the real service with its
lifespan, hub and budget). From this process (a separate one), over loopback with asyncio sockets:

- N desk streams `GET /desk/api/events`, each with the session cookie of a real `POST /api/v1/auth/login`, spread
  over supervisors (see everything), N1 agents (queue N1) and N2 agents (queue N2);
- tickets created at `--rate` per second through `POST /api/v1/tickets` (API key), alternating N1 and N2: each is
  one `ticket.created` event;
- other API requests meanwhile (ticket lists, status lookups, health) at `--other-rate`, every error counted.

Reported per run: delivery latency from the change (the event's stream id: Redis's clock when it was committed) to
its arrival on each stream (p50/p95/p99/max), events lost (what each stream may see, read back from the stream
after the run, minus what it got), errors of the other requests, Redis connections (CLIENT LIST, max sampled), the
node's RSS and its CPU per stream (idle with streams open, and while events flow). Goal: 1,000 streams, 50 events/s,
p95 < 100 ms, nothing lost, no errors, connections <= the budget (redis.max_connections, 32).

Bounded: each run stops after --duration seconds of events plus 10 s; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchstats import pct  # noqa: E402

from core.redis_server import PrivateRedis, free_port  # noqa: E402

PASSWORD = "bench-live-pass-2026"
API_KEY = "bench-live-key-0123456789abcdef"
ID_RE = re.compile(rb"^id: ([0-9]+)-([0-9]+)$", re.M)


def bucket_quantiles(text: str, name: str, qs: tuple[int, ...]) -> list[float | None]:
    """Upper bounds (ms) of the Prometheus histogram buckets holding these quantiles."""
    buckets = []
    for line in text.splitlines():
        m = re.match(rf'{name}_bucket{{le="([^"]+)"}} ([0-9.e+]+)', line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return [None for _ in qs]
    total = buckets[-1][1]
    return [next((round(le * 1000, 1) for le, c in buckets if c >= q / 100 * total), None) for q in qs]


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


async def prepare(url: str, users: dict[str, tuple[list[str], int | None, list[str]]]) -> None:
    from config.loader import load
    from core.clock import SystemClock
    from core.store import Store
    from desk import Desk

    settings = load(None, env={}).settings
    store = Store(url)
    desk = Desk(lambda: settings, store, SystemClock())
    for name, (roles, level, skills) in users.items():
        await desk.auth.create_user(name, name, roles, PASSWORD, level=level, skills=skills, exist_ok=True)
    await desk.auth.create_api_key("bench", ["admin"], key=API_KEY)
    await store.close()


class SSE(asyncio.Protocol):
    """One desk stream: HTTP/1.1 chunked SSE, parsed just enough to time each `id:` line."""

    def __init__(self, run: Run, idx: int, request: bytes) -> None:
        self.run, self.idx, self.request = run, idx, request
        self.buf = b""
        self.headers_done = False
        self.connected = asyncio.get_running_loop().create_future()
        self.closed = False
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now_ms = time.time() * 1000
        self.buf += data
        if not self.headers_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            if not head.startswith(b"HTTP/1.1 200"):
                self.run.stream_errors += 1
                status = head.split(b"\r\n", 1)[0].decode("latin-1")
                self.run.open_errors[status] = self.run.open_errors.get(status, 0) + 1
                if not self.connected.done():
                    self.connected.set_result(False)
                return
            self.headers_done = True
            self.buf = self.buf[end + 4:]
        # Chunked body: <hex size>\r\n<payload>\r\n ... each payload holds whole SSE frames.
        got = self.run.received[self.idx]
        lat = self.run.latency
        while True:
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                return
            size = int(self.buf[:nl].split(b";")[0], 16)
            if len(self.buf) < nl + 2 + size + 2:
                return
            payload = self.buf[nl + 2:nl + 2 + size]
            self.buf = self.buf[nl + 4 + size:]
            if size == 0:
                return
            if b"event: limit" in payload:
                self.run.refused += 1
            if not self.connected.done() and (b": connected" in payload or b"event: limit" in payload):
                self.connected.set_result(b"event: limit" not in payload)
            for ms, seq in ID_RE.findall(payload):
                got.add((int(ms), int(seq)))
                lat.append(now_ms - int(ms))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.run.disconnects += 1
        if not self.connected.done():
            self.connected.set_result(False)


class Run:
    def __init__(self, host: str, port: int, streams: int) -> None:
        self.host, self.port = host, port
        self.received: list[set[tuple[int, int]]] = [set() for _ in range(streams)]
        self.latency: array[float] = array("d")
        self.stream_errors = 0
        self.open_errors: dict[str, int] = {}
        self.refused = 0
        self.disconnects = 0
        self.other_ok = 0
        self.other_errors: dict[str, int] = {}
        self.created: list[tuple[str, float]] = []
        self.create_errors: dict[str, int] = {}


async def http(host: str, port: int, method: str, path: str, body: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None, within: float = 10.0) -> tuple[int, bytes, dict[str, str]]:
    """One request on a fresh connection (Connection: close): simple, and each is independent of the others."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        hdr = {"Host": f"{host}:{port}", "Connection": "close", **(headers or {})}
        if body is not None:
            hdr |= {"Content-Type": "application/json", "Content-Length": str(len(data))}
        writer.write(f"{method} {path} HTTP/1.1\r\n".encode()
                     + "".join(f"{k}: {v}\r\n" for k, v in hdr.items()).encode() + b"\r\n" + data)
        raw = await asyncio.wait_for(reader.read(-1), within)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    out_headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if out_headers.get("transfer-encoding") == "chunked":
        body_out, buf = b"", rest
        while buf:
            nl = buf.find(b"\r\n")
            size = int(buf[:nl], 16)
            if size == 0:
                break
            body_out += buf[nl + 2:nl + 2 + size]
            buf = buf[nl + 4 + size:]
        rest = body_out
    return status, rest, out_headers


def start_service(port: int, env: dict[str, str], log: Path, uvloop: bool = False) -> subprocess.Popen[bytes]:
    def _nofile() -> None:  # the service needs a descriptor per stream: LimitNOFILE in systemd
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    with log.open("wb") as err:
        run = ["run", "--no-sip", "--http", f"127.0.0.1:{port}"]
        # --service-uvloop: the same service on uvloop's event loop (an experiment: `atiende run` uses asyncio's).
        cmd = ([sys.executable, "-c", f"import sys, uvloop; uvloop.install(); from atiende.cli import main; "
                f"sys.exit(main({run!r}))"] if uvloop else [str(REPO / ".venv/bin/atiende"), *run])
        return subprocess.Popen(cmd, env=env, cwd=str(REPO), preexec_fn=_nofile, stdout=subprocess.DEVNULL, stderr=err)


async def bench_one(args: argparse.Namespace, streams: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    redis = PrivateRedis(tmp / "redis", port=free_port())
    redis.start()
    svc: subprocess.Popen[bytes] | None = None
    try:
        n_users = max(3, -(-streams // args.streams_per_user))
        roles = ["supervisor", "agent_n1", "agent_n2"]
        users: dict[str, tuple[list[str], int | None, list[str]]] = {}
        for i in range(n_users):
            role = roles[i % 3]
            if role == "supervisor":
                users[f"sup{i}"] = (["supervisor"], None, [])
            elif role == "agent_n1":
                users[f"ag{i}"] = (["agent_n1"], 1, ["general"])
            else:
                users[f"esp{i}"] = (["agent_n2"], 2, ["quejas"])
        await prepare(redis.url, users)
        port = free_port()
        env = {**os.environ, "ATIENDE_REDIS_URL": redis.url, "ATIENDE_SERVICE__DATA_DIR": str(tmp / "var"),
               "ATIENDE_SERVICE__LOG_LEVEL": "warning",
               "ATIENDE_DESK__LIVE_STREAMS_PER_USER": str(args.streams_per_user),
               "ATIENDE_DESK__LIVE_STREAMS_PER_ADDRESS": str(max(streams, 300)),
               "ATIENDE_DESK__RATE_LIMITS": json.dumps({"status": {"requests": 100000, "per_seconds": 60},
                                                        "chat": {"requests": 60, "per_seconds": 60},
                                                        "login": {"requests": 100000, "per_seconds": 60}})}

        svc = start_service(port, env, tmp / "service.log", args.service_uvloop)
        host = "127.0.0.1"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, _ = await http(host, port, "GET", "/livez", within=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or svc.poll() is not None:
                raise RuntimeError(f"the service did not start: {(tmp / 'service.log').read_text()[-2000:]}")
            await asyncio.sleep(0.2)
        run = Run(host, port, streams)
        tokens: dict[str, str] = {}
        for name in users:
            status, body, _ = await http(host, port, "POST", "/api/v1/auth/login",
                                         {"username": name, "password": PASSWORD})
            if status != 200:
                raise RuntimeError(f"login {name}: {status} {body[:200]!r}")
            tokens[name] = json.loads(body)["token"]
        names = list(users)
        stream_user = [names[i % len(names)] for i in range(streams)]
        rss0 = proc_rss_mb(svc.pid)
        loop = asyncio.get_running_loop()
        protos: list[SSE | None] = [None] * streams
        retries = 0

        async def open_stream(i: int) -> bool:
            """Like the desk page: a stream that is refused or fails is tried again 2 s later (5 times at most)."""
            nonlocal retries
            req = (f"GET /desk/api/events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                   f"Cookie: atiende_session={tokens[stream_user[i]]}\r\n\r\n").encode()
            for attempt in range(5):
                if attempt:
                    retries += 1
                    await asyncio.sleep(2.0)
                try:
                    _, proto = await loop.create_connection(lambda: SSE(run, i, req), host, port)
                    protos[i] = proto
                    if await asyncio.wait_for(proto.connected, 30):
                        return True
                    if proto.transport is not None:
                        proto.transport.close()
                except (OSError, TimeoutError):
                    pass
            return False

        t_open = time.monotonic()
        openers = []
        for i in range(streams):  # at --open-rate, as desks open through a morning (or after a restart, faster)
            await asyncio.sleep(max(0.0, t_open + i / args.open_rate - time.monotonic()))
            openers.append(asyncio.create_task(open_stream(i)))
        oks = await asyncio.wait_for(asyncio.gather(*openers), 120)
        open_s = time.monotonic() - t_open
        opened = sum(1 for ok in oks if ok)
        await asyncio.sleep(2.0)
        # Idle: streams open, no events (heartbeats only).
        cpu_a, t_a = proc_cpu_s(svc.pid), time.monotonic()
        await asyncio.sleep(args.idle)
        idle_cpu = (proc_cpu_s(svc.pid) - cpu_a) / (time.monotonic() - t_a)
        rss_open = proc_rss_mb(svc.pid)
        conns: list[int] = []
        import redis as redis_py

        rc: Any = redis_py.Redis.from_url(redis.url, decode_responses=True)
        # Warm-up, outside the measured window: the first request of each route builds FastAPI's route state
        # (measured: one 270 ms stall of the loop), as a node that has served a while has done long ago.
        for _n in range(10):
            await http(host, port, "POST", "/api/v1/tickets", {"subject": "calentamiento", "queue": "N1"},
                       {"X-API-Key": API_KEY})
            for path in ("/api/v1/tickets?queue=N1&limit=20", "/healthz", "/api/v1/queues", "/api/v1/auth/me"):
                await http(host, port, "GET", path, None, {"Cookie": f"atiende_session={tokens[names[0]]}"})
        await asyncio.sleep(1.0)
        stream_key = "atiende:events"
        first_id = rc.xrevrange(stream_key, count=1)
        start_after = first_id[0][0] if first_id else "0-0"

        stop = asyncio.Event()

        async def creator() -> None:
            period, n, t0 = 1 / args.rate, 0, time.monotonic()
            pending: set[asyncio.Task[None]] = set()
            while time.monotonic() - t0 < args.duration:
                due = t0 + n * period
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                queue = "N1" if n % 2 == 0 else "N2"
                task = asyncio.create_task(create_one(queue, n))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
            if pending:
                await asyncio.wait(pending, timeout=15)

        async def create_one(queue: str, n: int) -> None:
            try:
                status, _, _ = await http(host, port, "POST", "/api/v1/tickets",
                                          {"subject": f"Consulta {n}", "body": "Texto de la consulta " * 5,
                                           "queue": queue, "channel": "api"}, {"X-API-Key": API_KEY})
                if status not in (200, 201):
                    run.create_errors[str(status)] = run.create_errors.get(str(status), 0) + 1
            except (OSError, TimeoutError) as exc:
                run.create_errors[type(exc).__name__] = run.create_errors.get(type(exc).__name__, 0) + 1

        async def others() -> None:
            paths = ["/api/v1/tickets?queue=N1&limit=20", "/healthz", "/api/v1/queues", "/api/v1/auth/me"]
            n = 0
            period = 1 / args.other_rate
            t0 = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(max(0.0, t0 + n * period - time.monotonic()))
                path = paths[n % len(paths)]
                n += 1
                try:
                    status, _, _ = await http(host, port, "GET", path, None,
                                              {"Cookie": f"atiende_session={tokens[names[0]]}"})
                    if status == 200:
                        run.other_ok += 1
                    else:
                        run.other_errors[f"{path.split('?')[0]} {status}"] = run.other_errors.get(
                            f"{path.split('?')[0]} {status}", 0) + 1
                except (OSError, TimeoutError) as exc:
                    run.other_errors[type(exc).__name__] = run.other_errors.get(type(exc).__name__, 0) + 1

        async def sampler() -> None:
            while not stop.is_set():
                conns.append(len(rc.client_list()) - 1)
                await asyncio.sleep(0.5)

        busy0 = machine_busy()
        cpu_b, t_b = proc_cpu_s(svc.pid), time.monotonic()
        redis_cpu0 = proc_cpu_s(redis.proc.pid) if redis.proc else 0.0
        client_cpu0 = time.process_time()
        side = [asyncio.create_task(others()), asyncio.create_task(sampler())]
        await creator()
        await asyncio.sleep(3.0)  # the last events' way to every stream
        stop.set()
        await asyncio.gather(*side)
        elapsed = time.monotonic() - t_b
        busy1 = machine_busy()
        run_cpu = (proc_cpu_s(svc.pid) - cpu_b) / elapsed
        redis_cpu = ((proc_cpu_s(redis.proc.pid) if redis.proc else 0.0) - redis_cpu0) / elapsed
        client_cpu = (time.process_time() - client_cpu0) / elapsed
        machine = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1)
        rss_end = proc_rss_mb(svc.pid)
        _, metrics_body, _ = await http(host, port, "GET", "/metrics")
        fanout = bucket_quantiles(metrics_body.decode(), "atiende_live_fanout_delay_seconds", (50, 95))
        looplag = bucket_quantiles(metrics_body.decode(), "atiende_event_loop_lag_seconds", (50, 99))
        # What each stream should have had: the events of the window that its user may see.
        events = rc.xrange(stream_key, min=f"({start_after}", max="+")
        rc.close()
        queue_of: dict[tuple[int, int], str] = {}
        for sid, fields in events:
            ms, seq = sid.split("-")
            queue_of[(int(ms), int(seq))] = json.loads(fields["data"]).get("queue", "")
        lost = 0
        for i in range(streams):
            if not oks[i]:
                continue
            u = stream_user[i]
            sees = {"N1", "N2"} if u.startswith("sup") else ({"N1"} if u.startswith("ag") else {"N2"})
            expected = {k for k, q in queue_of.items() if q in sees}
            lost += len(expected - run.received[i])
        for proto in protos:
            if proto is not None and proto.transport is not None:
                proto.transport.close()
        lat = list(run.latency)
        return {
            "streams": streams, "opened": opened, "open_errors": run.open_errors, "open_retries": retries,
            "refused": run.refused, "open_s": round(open_s, 2),
            "events": len(queue_of), "deliveries": len(lat),
            "p50_ms": round(pct(lat, 50), 1), "p95_ms": round(pct(lat, 95), 1), "p99_ms": round(pct(lat, 99), 1),
            "max_ms": round(max(lat), 1) if lat else None, "lost": lost,
            "create_errors": run.create_errors, "other_ok": run.other_ok, "other_errors": run.other_errors,
            "fanout_p50_ms": fanout[0], "fanout_p95_ms": fanout[1], "loop_lag_p50_ms": looplag[0],
            "loop_lag_p99_ms": looplag[1],
            "redis_conns_max": max(conns) if conns else None, "disconnects": run.disconnects - 0,
            "rss_mb_before": round(rss0, 1), "rss_mb_open": round(rss_open, 1), "rss_mb_end": round(rss_end, 1),
            "rss_kb_per_stream": round((rss_open - rss0) * 1024 / max(1, opened), 1),
            "node_cpu_idle_pct": round(idle_cpu * 100, 1), "node_cpu_pct": round(run_cpu * 100, 1),
            "node_cpu_ms_per_stream_s": round(run_cpu * 1000 / max(1, opened), 3),
            "redis_cpu_pct": round(redis_cpu * 100, 1), "client_cpu_pct": round(client_cpu * 100, 1),
            "machine_cpu_pct": round(machine * 100, 1),
            "others_cpu_pct": round(max(0.0, machine - run_cpu - redis_cpu - client_cpu) * 100, 1),
        }
    finally:
        if svc is not None and svc.poll() is None:
            svc.send_signal(signal.SIGINT)
            try:
                svc.wait(20)
            except subprocess.TimeoutExpired:
                svc.kill()
                svc.wait()
        redis.stop()
        log_file = tmp / "service.log"
        if args.show_log and log_file.exists():
            print(log_file.read_text()[-args.show_log:], file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="100,300,1000", help="comma-separated stream counts, one run each")
    ap.add_argument("--rate", type=float, default=50.0, help="ticket creations (= events) per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of events per run")
    ap.add_argument("--other-rate", type=float, default=20.0, help="other API requests per second")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds measured with streams open and no events")
    ap.add_argument("--open-rate", type=float, default=500.0, help="streams opened per second at the start")
    ap.add_argument("--streams-per-user", type=int, default=10, help="streams each user opens (tabs)")
    ap.add_argument("--service-uvloop", action="store_true", help="run the service on uvloop (experiment)")
    ap.add_argument("--show-log", type=int, default=0, metavar="CHARS", help="print the end of the service's log")
    ap.add_argument("--json", action="store_true", help="one JSON line per run instead of the table")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this client holds a socket per stream
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows = []
    for n in (int(x) for x in args.streams.split(",")):
        row = asyncio.run(bench_one(args, n))
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False) if args.json else
              f"streams {row['streams']:>5} (open {row['opened']}, refused {row['refused']}, {row['open_s']} s, "
              f"errors {row['open_errors'] or 0}, retried {row['open_retries']}) | "
              f"events {row['events']} -> {row['deliveries']} deliveries | latency p50 {row['p50_ms']} p95 "
              f"{row['p95_ms']} p99 {row['p99_ms']} max {row['max_ms']} ms (hub fan-out p50 <= {row['fanout_p50_ms']}, p95 <= "
              f"{row['fanout_p95_ms']} ms; loop lag p99 <= {row['loop_lag_p99_ms']} ms) | lost {row['lost']} | creations err "
              f"{row['create_errors'] or 0} | other requests ok {row['other_ok']} err {row['other_errors'] or 0} | "
              f"redis conns max {row['redis_conns_max']} | RSS {row['rss_mb_before']} -> {row['rss_mb_open']} -> "
              f"{row['rss_mb_end']} MB ({row['rss_kb_per_stream']} kB/stream) | node CPU idle {row['node_cpu_idle_pct']}%"
              f" busy {row['node_cpu_pct']}% ({row['node_cpu_ms_per_stream_s']} ms/s per stream) | redis "
              f"{row['redis_cpu_pct']}% client {row['client_cpu_pct']}% others {row['others_cpu_pct']}%", flush=True)
    goal = rows[-1]
    ok = (goal["streams"] >= 1000 and goal["p95_ms"] < 100 and goal["lost"] == 0 and not goal["other_errors"]
          and not goal["create_errors"] and (goal["redis_conns_max"] or 0) <= 32)
    print(f"goal (1,000 streams, p95 < 100 ms, none lost, no errors, <= 32 Redis connections): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
