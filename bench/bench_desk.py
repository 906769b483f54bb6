"""Desk throughput: ticket creations/s and citizen status lookups/s, with p50/p99 latency.

A real uvicorn (1..N worker processes) serves the app against a real redis-server (AOF, `appendfsync always`,
the private server's settings); the load comes from a separate process, bounded by time and request count:
wrk (Debian package `wrk`, scripts in bench/wrk/) by default when it is installed, else a small keep-alive
HTTP/1.1 client on asyncio (`--load python`, which also has open-loop rates).

    .venv/bin/python bench/bench_desk.py                              # workers 2, connections 8,16,32,64, 8 s per test
    nice -n -15 .venv/bin/python bench/bench_desk.py --workers 2,3 --concurrency 16 --duration 15
    .venv/bin/python bench/bench_desk.py --load python --create-rate 1000 --lookup-rate 3000 --concurrency 64

Goal (issue 7): >= 1,000 creations/s and >= 3,000 lookups/s with p99 < 50 ms on a 2-core machine. With a closed
loop (each connection sends its next request when the answer arrives) the mean latency is connections divided by
throughput, so the goal is met at a connection count, which the table reports per row.
The status endpoint's rate limit stays on (counted per client in every lookup) with a limit raised above the
load; the creation requests authenticate with an API key like the IVR does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KEY = "bench-desk-key-not-for-production"  # given to the service by the bench (env), nowhere else


def app_factory() -> Any:
    """uvicorn --factory entry: the real app on the URL in ATIENDE_REDIS_URL."""
    sys.path.insert(0, str(REPO))
    from atiende.runtime import Runtime
    from config.loader import load
    from core.store import Store
    from desk_api.app import create_app

    loaded = load(None)
    store = Store(loaded.settings.redis.url or "", prefix=loaded.settings.redis.prefix)
    app = create_app(Runtime(loaded, store=store))
    return app


# ---- the load generator (runs in its own process) ---------------------------------------------------


async def _client(port: int, kind: str, duration: float, concurrency: int, max_requests: int,
                  refs: list[str], rate: float = 0.0) -> dict[str, Any]:
    lat: list[float] = []
    codes: dict[int, int] = {}
    sent = 0

    def request(i: int) -> bytes:
        if kind == "create":
            body = json.dumps({"channel": "phone", "queue": "N1", "subject": f"Consulta {i}", "body": "Quiero saber el estado",
                               "intent": "info_tramite"}).encode()
            return (f"POST /api/v1/tickets HTTP/1.1\r\nHost: b\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        ref = refs[i % len(refs)]
        return f"GET /api/v1/status/{ref} HTTP/1.1\r\nHost: b\r\n\r\n".encode()

    async def worker() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at and sent < max_requests:
                sent += 1
                t0 = time.perf_counter()
                if rate:  # open loop: request i is due at start + i / rate; latency counts from then
                    due = t_start + sent / rate
                    if due > t0:
                        await asyncio.sleep(due - t0)
                    t0 = due
                writer.write(request(sent))
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                lat.append(time.perf_counter() - t0)
                codes[status] = codes.get(status, 0) + 1
        finally:
            writer.close()

    t_start, c_start = time.perf_counter(), time.process_time()
    stop_at = t_start + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, client_cpu = time.perf_counter() - t_start, time.process_time() - c_start
    lat.sort()
    ok = sum(v for c, v in codes.items() if 200 <= c < 300)
    return {
        "requests": len(lat), "ok": ok, "codes": codes, "seconds": round(elapsed, 2),
        "rps": round(ok / elapsed, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1) if lat else None,
        "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
        "client_cpu_ms_per_req": round(client_cpu / max(1, len(lat)) * 1000, 3),
    }


def client_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    refs = Path(args.refs).read_text().split() if args.refs else []
    out = asyncio.run(_client(args.port, args.kind, args.duration, args.concurrency, args.max_requests, refs, args.rate))
    print(json.dumps(out))


# ---- the orchestrator ----------------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by a process and its children (uvicorn's master and workers)."""
    return sum(_proc_cpu(p) for p in (root, *children(root)))


def wait_http(port: int, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("uvicorn did not come up")


def run_load(port: int, kind: str, args: argparse.Namespace, concurrency: int,
             refs_file: str | None = None) -> dict[str, Any]:
    if args.load == "wrk":
        return run_wrk(port, kind, args, concurrency, refs_file)
    cmd = [sys.executable, __file__, "--client", "--port", str(port), "--kind", kind, "--duration", str(args.duration),
           "--concurrency", str(concurrency), "--max-requests", str(args.max_requests),
           "--rate", str(args.create_rate if kind == "create" else args.lookup_rate)]
    if refs_file:
        cmd += ["--refs", refs_file]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60, check=True)
    res: dict[str, Any] = json.loads(out.stdout)
    res["offered_rate"] = args.create_rate if kind == "create" else args.lookup_rate
    return res


def run_wrk(port: int, kind: str, args: argparse.Namespace, concurrency: int, refs_file: str | None) -> dict[str, Any]:
    """One wrk run (closed loop, keep-alive); its Lua `done()` prints a JSON line with percentiles and codes."""
    threads = max(1, min(args.wrk_threads, concurrency))
    script = Path(__file__).parent / "wrk" / ("create.lua" if kind == "create" else "lookup.lua")
    per_thread = max(1, args.max_requests // threads)
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(args.duration))}s", "--timeout", "10s",
           "--latency", "-s", str(script), f"http://127.0.0.1:{port}", "--",
           KEY if kind == "create" else str(refs_file), str(per_thread)]
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60, check=True)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    w = json.loads(line[len("WRK_JSON "):])
    codes = {int(k): v for k, v in w["codes"].items()}
    ok = sum(v for c, v in codes.items() if 200 <= c < 300)
    seconds = w["duration_us"] / 1e6
    errors = w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"]
    client_cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
    return {"requests": w["requests"], "ok": ok, "codes": codes, "socket_errors": errors, "seconds": round(seconds, 2),
            "rps": round(ok / seconds, 1), "p50_ms": round(w["p50_ms"], 1), "p90_ms": round(w["p90_ms"], 1),
            "p99_ms": round(w["p99_ms"], 1), "max_ms": round(w["max_ms"], 1), "mean_ms": round(w["mean_ms"], 1),
            "client_cpu_ms_per_req": round(client_cpu / max(1, w["requests"]) * 1000, 3)}


def measured(port: int, uv_pid: int, redis_pid: int | None, kind: str, args: argparse.Namespace, concurrency: int,
             refs_file: str | None = None) -> dict[str, Any]:
    """One load run, plus the CPU the app and Redis spent per request and the machine's load meanwhile."""
    cpu0, rcpu0, load0 = tree_cpu(uv_pid), _proc_cpu(redis_pid) if redis_pid else 0.0, os.getloadavg()[0]
    others0, t0 = all_cpu(), time.monotonic()
    res = run_load(port, kind, args, concurrency, refs_file)
    n = max(1, res["ok"])
    res["server_cpu_ms_per_req"] = round((tree_cpu(uv_pid) - cpu0) / n * 1000, 3)
    if redis_pid:
        res["redis_cpu_ms_per_req"] = round((_proc_cpu(redis_pid) - rcpu0) / n * 1000, 3)
    res["loadavg_1m"] = round(max(load0, os.getloadavg()[0]), 1)
    # CPU that processes other than this bench's (server tree, Redis, load generator) used during the test, in % of
    # one core: another job on the machine shows here, and then the latency is not this service's alone.
    ours = {os.getpid(), uv_pid, redis_pid} | set(children(uv_pid))
    others1 = all_cpu()
    used = sum(c - others0[pid] for pid, c in others1.items() if pid in others0 and pid not in ours)
    res["others_cpu_pct"] = round(used / (time.monotonic() - t0) * 100)
    return res


def children(root: int) -> list[int]:
    """Pids whose parent is `root`."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == root:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def all_cpu() -> dict[int, float]:
    """CPU seconds so far of every process (by pid)."""
    out: dict[int, float] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            out[int(d.name)] = _proc_cpu(int(d.name))
        except ValueError:
            continue
    return out


def busy_neighbours() -> list[str]:
    """Other processes using a lot of CPU right now (the lead's speech runs, test suites): latency is then not
    this service's alone. Sampled over 0.5 s from /proc."""
    def snapshot() -> dict[int, tuple[float, str]]:
        out: dict[int, tuple[float, str]] = {}
        for d in Path("/proc").glob("[0-9]*"):
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                out[int(d.name)] = (_proc_cpu(int(d.name)), cmd)
            except (OSError, ValueError):
                continue
        return out

    a = snapshot()
    time.sleep(0.5)
    b = snapshot()
    me = os.getpid()
    return [f"{pid} {cmd[:80]} ({(cpu - a[pid][0]) / 0.5 * 100:.0f}% CPU)" for pid, (cpu, cmd) in b.items()
            if pid in a and pid != me and (cpu - a[pid][0]) / 0.5 > 0.3]


def rc_history(url: str, event: str) -> list[Any]:
    import redis

    with redis.Redis.from_url(url) as rc:
        return list(rc.execute_command("LATENCY", "HISTORY", event))


def goal_met(res: dict[str, Any]) -> bool:
    need = 1000 if res["test"] == "ticket creation" else 3000
    # open loop: the offered rate is the throughput (ok/s comes out a hair lower: the clock includes the last answers)
    rate = res.get("offered_rate") or res["rps"]
    return bool(rate >= need and res["p99_ms"] is not None and res["p99_ms"] < 50 and res["ok"] == res["requests"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="2", help="uvicorn worker counts to try, comma-separated")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per test")
    p.add_argument("--concurrency", default="8,16,32,64", help="client connections, comma-separated (one run each)")
    p.add_argument("--max-requests", type=int, default=200_000, help="upper bound of requests per test")
    p.add_argument("--redis-url", default=None, help="use this Redis instead of a private one (AOF always)")
    p.add_argument("--load", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python",
                   help="load generator: wrk (Debian package, default when installed) or the asyncio client")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (one is plenty for this load)")
    p.add_argument("--create-rate", type=float, default=0.0,
                   help="python load only: offer this many creations/s (open loop, latency from the due time); "
                        "0 = as fast as possible")
    p.add_argument("--lookup-rate", type=float, default=0.0, help="the same for status lookups")
    p.add_argument("--json", default=None, help="also write the results to this file")
    # client mode (internal)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--kind", default="create", help=argparse.SUPPRESS)
    p.add_argument("--refs", default=None, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        args.concurrency = int(args.concurrency)
        client_main(args)
        return
    if args.load == "wrk" and not shutil.which("wrk"):
        p.error("wrk is not installed: apt-get install wrk (or make bench-deps), or use --load python")
    if args.load == "wrk" and (args.create_rate or args.lookup_rate):
        p.error("open-loop rates need --load python")
    conns = [int(c) for c in args.concurrency.split(",")]

    sys.path.insert(0, str(REPO))
    import redis

    from core.redis_server import PrivateRedis, free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-desk-"))
    server = None
    url = args.redis_url
    if url is None:
        server = PrivateRedis(tmp / "redis")
        url = server.start()
    print(f"redis {url} ({'private, appendonly yes, appendfsync always' if server else 'external'}); "
          f"{os.cpu_count()} CPUs; load {args.load}; connections {conns}; {args.duration:.0f} s per test; "
          f"nice {os.nice(0)}")
    if server:  # Redis records its own stalls (fsync, AOF rewrite, fork) longer than 10 ms; printed at the end
        with redis.Redis.from_url(url) as rc:
            rc.config_set("latency-monitor-threshold", 10)
    busy = busy_neighbours()
    if busy:
        print("WARNING: other busy processes; latency figures are not this service's alone:\n  " + "\n  ".join(busy))
    results = []
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            prefix = f"bench{workers}"
            port = free_port()
            # The bench's own key (demo accounts exist only with the demo switch, and no key is usable by default).
            env = {**os.environ, "ATIENDE_REDIS_URL": url, "ATIENDE_REDIS__PREFIX": prefix, "ATIENDE_DESK__DEMO": "true",
                   "ATIENDE_DESK__API_KEYS": f"[{{name: bench, key: {KEY}, roles: [supervisor]}}]",
                   "ATIENDE_DESK__RATE_LIMITS": "{status: {requests: 100000000, per_seconds: 60}}",
                   "ATIENDE_SERVICE__LOG_LEVEL": "warning"}
            uv = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "bench_desk:app_factory", "--app-dir",
                                   str(Path(__file__).parent), "--host", "127.0.0.1", "--port", str(port), "--workers",
                                   str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                                   "--log-level", "warning"], env=env, cwd=REPO)
            try:
                wait_http(port)
                r = redis.Redis.from_url(url, decode_responses=True)
                # Warm up both paths at the highest connection count: a cold worker's first requests are slow
                # (FastAPI builds each route's state on first use; redis-py reads package metadata for every new
                # pooled connection), and the kernel spreads connections over the workers unevenly.
                warm = argparse.Namespace(**{**vars(args), "duration": 3.0, "create_rate": 0.0, "lookup_rate": 0.0})
                run_load(port, "create", warm, max(conns))
                refs_file = tmp / f"refs{workers}.txt"
                refs_file.write_text("\n".join(r.zrange(f"{prefix}:tickets:all", 0, 4999)))  # type: ignore[arg-type]
                run_load(port, "lookup", warm, max(conns), str(refs_file))
                redis_pid = server.proc.pid if server and server.proc else None
                for c in conns:
                    create = measured(port, uv.pid, redis_pid, "create", args, c)
                    lookup = measured(port, uv.pid, redis_pid, "lookup", args, c, str(refs_file))
                    for name, res in (("ticket creation", create), ("status lookup", lookup)):
                        results.append({"workers": workers, "connections": c, "test": name, **res})
                stored = r.zcard(f"{prefix}:tickets:all")
                r.close()
            finally:
                uv.terminate()
                uv.wait(20)
            print(f"  workers={workers}: stored tickets {stored}")
        if server:
            with redis.Redis.from_url(url, decode_responses=True) as rc:
                info = rc.info("persistence")
                latest = rc.execute_command("LATENCY", "LATEST")
            print(f"redis: {info.get('aof_rewrites', '?')} AOF rewrites during the run (one each time the file doubles); "
                  "stalls over 10 ms (event, times seen, worst ms): "
                  + (", ".join(f"{e[0]} {len(rc_history(url, e[0]))}x {e[3]} ms" for e in latest) or "none"))
    finally:
        if server:
            server.stop()
    print(f"{'workers':>7} {'conns':>5} {'test':<16} {'requests':>8} {'ok/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'app cpu':>8} {'redis cpu':>9} {'client':>7} {'others':>6} {'goal':>4}  codes")
    for res in results:
        print(f"{res['workers']:>7} {res['connections']:>5} {res['test']:<16} {res['requests']:>8} {res['rps']:>8} "
              f"{res['p50_ms']:>7} {res['p99_ms']:>7} {res.get('max_ms', '-'):>7} {res['server_cpu_ms_per_req']:>6}ms "
              f"{res.get('redis_cpu_ms_per_req', '-'):>7}ms {res['client_cpu_ms_per_req']:>5}ms {res['others_cpu_pct']:>5}% "
              f"{'yes' if goal_met(res) else 'no':>4}  {res['codes']}"
              + (f" socket errors {res['socket_errors']}" if res.get("socket_errors") else ""))
    print("app / redis / client cpu: CPU milliseconds per request (uvicorn master + workers, redis-server, load generator);\n"
          "others: CPU used meanwhile by other processes on the machine, % of one core;\n"
          "goal: >= 1,000 creations/s or >= 3,000 lookups/s, p99 < 50 ms, every request 2xx.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
