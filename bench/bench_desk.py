"""Desk throughput: ticket creations/s and citizen status lookups/s, with p50/p99 latency.

A real uvicorn (1..N worker processes) serves the app against a real redis-server (AOF, `appendfsync always`,
the private server's settings); the load comes from a separate process, a small keep-alive HTTP/1.1 client on
asyncio (bounded by time and request count).

    .venv/bin/python bench/bench_desk.py                       # workers 1 and 2, 8 s per test, 64 connections
    .venv/bin/python bench/bench_desk.py --workers 2 --duration 15 --concurrency 128

Goal (issue 7): >= 1,000 creations/s and >= 3,000 lookups/s with p99 < 50 ms on a 2-core machine.
The status endpoint's rate limit stays on (its Redis INCR is part of every lookup) with a limit raised above the
load; the creation requests authenticate with an API key like the IVR does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KEY = "ivr-demo-key-change-me-2026"


def app_factory() -> Any:
    """uvicorn --factory entry: the real app on the URL in ATIENDE_REDIS_URL."""
    sys.path.insert(0, str(REPO))
    from atiende.runtime import Runtime
    from atiende.store import Store
    from config.loader import load
    from desk_api.app import create_app

    loaded = load(None)
    store = Store(loaded.settings.redis.url or "", prefix=loaded.settings.redis.prefix)
    app = create_app(Runtime(loaded, store=store))
    if os.environ.get("BENCH_VARIANT") == "tuned":
        # What two changes to desk_api/app.py would give (an experiment, not how the service runs): no
        # BaseHTTPMiddleware (the request counter as plain ASGI middleware instead) and the desk's routes matched
        # first. Here the counter is simply dropped.
        import desk_api.routes.desk as desk_routes

        app.user_middleware = [m for m in app.user_middleware if "BaseHTTPMiddleware" not in repr(m)]
        app.middleware_stack = None
        routes = app.router.routes
        k = next(i for i, r in enumerate(routes) if getattr(r, "original_router", None) is desk_routes.router)
        routes.insert(0, routes.pop(k))
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
    pids = [root]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == root:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return sum(_proc_cpu(p) for p in pids)


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


def run_load(port: int, kind: str, args: argparse.Namespace, refs_file: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--client", "--port", str(port), "--kind", kind, "--duration", str(args.duration),
           "--concurrency", str(args.concurrency), "--max-requests", str(args.max_requests),
           "--rate", str(args.create_rate if kind == "create" else args.lookup_rate)]
    if refs_file:
        cmd += ["--refs", refs_file]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def measured(port: int, uv_pid: int, redis_pid: int | None, kind: str, args: argparse.Namespace,
             refs_file: str | None = None) -> dict[str, Any]:
    """One load run, plus the CPU the app and Redis spent per request and the machine's load meanwhile."""
    cpu0, rcpu0, load0 = tree_cpu(uv_pid), _proc_cpu(redis_pid) if redis_pid else 0.0, os.getloadavg()[0]
    res = run_load(port, kind, args, refs_file)
    n = max(1, res["ok"])
    res["server_cpu_ms_per_req"] = round((tree_cpu(uv_pid) - cpu0) / n * 1000, 3)
    if redis_pid:
        res["redis_cpu_ms_per_req"] = round((_proc_cpu(redis_pid) - rcpu0) / n * 1000, 3)
    res["loadavg_1m"] = round(max(load0, os.getloadavg()[0]), 1)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2", help="uvicorn worker counts to try, comma-separated")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per test")
    p.add_argument("--concurrency", type=int, default=64, help="client connections")
    p.add_argument("--max-requests", type=int, default=200_000, help="upper bound of requests per test")
    p.add_argument("--redis-url", default=None, help="use this Redis instead of a private one (AOF always)")
    p.add_argument("--create-rate", type=float, default=0.0,
                   help="offer this many creations/s (open loop, latency from the due time); 0 = as fast as possible")
    p.add_argument("--lookup-rate", type=float, default=0.0, help="the same for status lookups")
    p.add_argument("--variant", choices=("as-is", "tuned"), default="as-is",
                   help="tuned: the app without BaseHTTPMiddleware and with the desk's routes first (an experiment)")
    # client mode (internal)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--kind", default="create", help=argparse.SUPPRESS)
    p.add_argument("--refs", default=None, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        client_main(args)
        return

    sys.path.insert(0, str(REPO))
    import redis

    from atiende.redis_server import PrivateRedis, free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-desk-"))
    server = None
    url = args.redis_url
    if url is None:
        server = PrivateRedis(tmp / "redis")
        url = server.start()
    print(f"redis {url} ({'private, appendonly yes, appendfsync always' if server else 'external'}); "
          f"{os.cpu_count()} CPUs; {args.concurrency} connections; {args.duration:.0f} s per test; app {args.variant}")
    results = []
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            prefix = f"bench{workers}"
            port = free_port()
            env = {**os.environ, "ATIENDE_REDIS_URL": url, "ATIENDE_REDIS__PREFIX": prefix,
                   "ATIENDE_DESK__RATE_LIMITS": "{status: {requests: 100000000, per_seconds: 60}}",
                   "ATIENDE_SERVICE__LOG_LEVEL": "warning", "BENCH_VARIANT": args.variant}
            uv = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "bench_desk:app_factory", "--app-dir",
                                   str(Path(__file__).parent), "--host", "127.0.0.1", "--port", str(port), "--workers",
                                   str(workers), "--no-access-log", "--log-level", "warning"], env=env, cwd=REPO)
            try:
                wait_http(port)
                r = redis.Redis.from_url(url, decode_responses=True)
                # warm up: bootstrap users and keys, import paths, script cache
                run_load(port, "create", argparse.Namespace(**{**vars(args), "duration": 1.0, "concurrency": 8,
                                                               "create_rate": 0.0}))
                redis_pid = server.proc.pid if server and server.proc else None
                create = measured(port, uv.pid, redis_pid, "create", args)
                refs = r.zrange(f"{prefix}:tickets:all", 0, 4999)
                refs_file = tmp / f"refs{workers}.txt"
                refs_file.write_text("\n".join(refs))  # type: ignore[arg-type]
                lookup = measured(port, uv.pid, redis_pid, "lookup", args, str(refs_file))
                stored = r.zcard(f"{prefix}:tickets:all")
                r.close()
            finally:
                uv.terminate()
                uv.wait(20)
            for name, res in (("ticket creation", create), ("status lookup", lookup)):
                results.append({"workers": workers, "test": name, **res})
            print(f"  workers={workers}: stored tickets {stored}")
    finally:
        if server:
            server.stop()
    print(f"{'workers':>7} {'test':<16} {'requests':>8} {'ok/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'app cpu':>8} "
          f"{'redis cpu':>9} {'load':>5}  codes")
    for res in results:
        print(f"{res['workers']:>7} {res['test']:<16} {res['requests']:>8} {res['rps']:>8} {res['p50_ms']:>7} "
              f"{res['p99_ms']:>7} {res['server_cpu_ms_per_req']:>6}ms {res.get('redis_cpu_ms_per_req', '-'):>7}ms "
              f"{res['loadavg_1m']:>5}  {res['codes']}")
    print("app cpu / redis cpu: CPU milliseconds per successful request (uvicorn master + workers, redis-server);\n"
          "load: the 1-minute load average during the test (other processes on the machine compete for the cores).")
    cores = os.cpu_count() or 1
    for res in results:
        per = res["server_cpu_ms_per_req"] + res.get("redis_cpu_ms_per_req", 0) + res["client_cpu_ms_per_req"]
        print(f"  workers={res['workers']} {res['test']}: app+redis+client {per:.2f} CPU ms/request -> at most "
              f"~{cores * 1000 / per:,.0f}/s if these {cores} cores did nothing else")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
