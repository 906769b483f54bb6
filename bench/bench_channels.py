"""Channel webhooks under load: Telegram updates per second through the whole webhook flow and assistant, with
p50/p95/p99/max.

A real uvicorn process serves the app against a private redis-server (AOF, `appendfsync always`); this process
sends signed Telegram `Update`s with a bounded asyncio client and runs the local stand-in for the Bot API that
receives every `sendMessage`. Three kinds of message, each from a different chat:

- ticket:  "Quiero hablar con una persona..." -> citizen identified, ticket created, reference sent back;
- answer:  "¿Cuál es el horario de atención?" -> routed, answered by the IVR flows (self-service), sent back;
- status:  "¿Cómo va mi consulta K7M-4PX?"   -> routed, the ticket's status text sent back;
- retry:   the "ticket" updates again, as Telegram retries them -> answered "duplicate" by the claim, nothing sent;
- group:   messages from group chats -> one "escríbame por privado" per group, nothing else.

Then, in-process: the assistant alone per message, and the e-mail parser on the real-world samples of
tests/data/channels/mail (bounces, auto-replies, quoted replies), per message.

    .venv/bin/python bench/bench_channels.py                    # 6 s per kind, 16 concurrent requests
    .venv/bin/python bench/bench_channels.py --duration 10 --concurrency 32 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SECRET = "bench-secret"


def app_factory() -> Any:
    """uvicorn --factory entry: the real app, with the Telegram channel pointed at the local Bot API stand-in."""
    from atiende.runtime import Runtime
    from config.channels import ChannelsConfig, TelegramConfig
    from config.loader import load
    from core.store import Store
    from desk_api.app import create_app

    loaded = load(None)
    rt = Runtime(loaded, store=Store(loaded.settings.redis.url or "", prefix="bench"))
    rt.channels_override = ChannelsConfig(
        telegram=TelegramConfig(bot_token="1:bench", webhook_secret=SECRET, api_base=os.environ["BENCH_BOT_API"]),
        message_rate_limit=1_000_000, status_rate_limit=1_000_000)
    return create_app(rt)


def update(i: int, text: str) -> dict[str, Any]:
    user = {"id": 10_000_000 + i, "is_bot": False, "first_name": "Bench"}
    chat = {**user, "type": "private"} if not 400_000 <= i < 500_000 else {"id": -1000 - i % 50, "type": "group", "title": "G"}
    return {"update_id": i, "message": {"message_id": i, "from": user, "chat": chat, "date": int(time.time()),
                                        "text": text}}


def pct(lat: list[float], q: float) -> float | None:
    return round(lat[max(0, int(len(lat) * q + 0.5) - 1)] * 1000, 2) if lat else None


async def load(url: str, kind: str, texts: list[str], start: int, duration: float, concurrency: int,
               max_requests: int) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    codes: dict[int, int] = {}
    stop_at = time.perf_counter() + duration
    counter = start

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal counter
        while time.perf_counter() < stop_at and counter < start + max_requests:
            counter += 1
            i = counter
            t0 = time.perf_counter()
            r = await client.post("/api/v1/channels/telegram/webhook", json=update(i, texts[i % len(texts)]),
                                  headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
            lat.append(time.perf_counter() - t0)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {"kind": kind, "requests": len(lat), "per_s": round(len(lat) / elapsed, 1),
            "p50_ms": round(statistics.median(lat) * 1000, 1) if lat else None, "p95_ms": pct(lat, 0.95),
            "p99_ms": pct(lat, 0.99), "max_ms": pct(lat, 1.0), "codes": codes}


def mail_parser(rounds: int) -> None:
    """The e-mail parser (classification, bounce ids, quote stripping) per real-world sample."""
    from desk_api.channels.email import parse_mail

    samples = sorted((REPO / "tests" / "data" / "channels" / "mail").glob("*.eml"))
    lat: list[float] = []
    for _ in range(rounds):
        for path in samples:
            raw = path.read_bytes().replace(b"{MSGID}", b"<x@junta.example>").replace(b"{REF}", b"K7M-4PX")
            t0 = time.perf_counter()
            parse_mail(raw, "atencion@junta.example")
            lat.append(time.perf_counter() - t0)
    lat.sort()
    print({"in_process": "email-parse", "messages": len(lat), "p50_ms": pct(lat, 0.5), "p95_ms": pct(lat, 0.95),
           "p99_ms": pct(lat, 0.99), "max_ms": pct(lat, 1.0)})


async def in_process(redis_url: str, data_dir: Path, n: int, concurrency: int) -> None:
    """The assistant alone (no HTTP): messages per second and CPU milliseconds per message."""
    from desk_api.channels.assistant import handle
    from desk_api.channels.base import Contact, Inbound
    from tests._channels_support import make_runtime

    rt = make_runtime(redis_url, "inproc", data_dir)
    try:
        first = await handle(rt, Inbound(contact=Contact(channel="webchat", address="w0"), text="Quiero hablar con una persona",
                                         threads=["w0"]))
        shown = f"{first.ref[:3]}-{first.ref[3:]}" if first.ref else ""
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, text: str) -> None:
            async with sem:
                await handle(rt, Inbound(contact=Contact(channel="webchat", address=f"w{i}"), text=text, threads=[f"w{i}"]))

        for start, (kind, text) in enumerate([("ticket", "Quiero hablar con una persona"),
                                              ("answer", "¿Cuál es el horario de atención?"),
                                              ("status", f"¿Cómo va mi consulta {shown}?")]):
            t0, c0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one((start + 1) * 1_000_000 + i, text) for i in range(n)))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print({"in_process": kind, "messages": n, "per_s": round(n / wall, 1), "cpu_ms_per_msg": round(cpu / n * 1000, 2)})
    finally:
        await rt.store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per kind of message")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--max-requests", type=int, default=50_000, help="upper bound per kind")
    ap.add_argument("--in-process", type=int, default=300, help="messages per kind through the assistant alone")
    ap.add_argument("--mail-rounds", type=int, default=200, help="passes over the e-mail samples")
    args = ap.parse_args()

    from core.redis_server import PrivateRedis
    from tests._channels_support import Recorder

    with tempfile.TemporaryDirectory() as tmp:
        redis = PrivateRedis(Path(tmp) / "redis")
        redis.start()
        bot = Recorder().start()
        port = 18000 + os.getpid() % 1000
        env = {**os.environ, "ATIENDE_REDIS_URL": redis.url, "BENCH_BOT_API": bot.url, "ATIENDE_SERVICE__DATA_DIR": tmp}
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "bench.bench_channels:app_factory",
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
                                   "--log-level", "warning", "--no-access-log"], cwd=REPO, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            # A few tickets to ask about, made through the channel itself.
            warm = asyncio.run(load(url, "warm-up", ["Quiero hablar con una persona"], 900_000, 60, 4, 20))
            refs = [r.body["text"].split("referencia ")[1][:7] for r in bot.requests if "referencia " in r.body.get("text", "")]
            if not refs:
                raise SystemExit(f"no ticket references came back: {warm}")
            kinds = [("ticket", ["Quiero hablar con una persona sobre mi solicitud"], 0),
                     ("answer", ["¿Cuál es el horario de atención?"], 100_000),
                     ("status", [f"¿Cómo va mi consulta {ref}?" for ref in refs], 200_000),
                     ("retry", ["Quiero hablar con una persona sobre mi solicitud"], 0),
                     ("group", ["¿Cómo va mi consulta?"], 400_000)]
            print(f"workers={args.workers} concurrency={args.concurrency} duration={args.duration}s "
                  f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
            done: dict[str, int] = {}
            for kind, texts, start in kinds:
                before = len(bot.requests)
                limit = done["ticket"] if kind == "retry" else args.max_requests  # the same update ids, no new ones
                row = asyncio.run(load(url, kind, texts, start, args.duration, args.concurrency, limit))
                done[kind] = row["requests"]
                row["replies_sent"] = len(bot.requests) - before
                print(row)
            asyncio.run(in_process(redis.url, Path(tmp), args.in_process, args.concurrency))
            mail_parser(args.mail_rounds)
        finally:
            server.terminate()
            server.wait(10)
            bot.stop()
            redis.stop()


if __name__ == "__main__":
    main()
