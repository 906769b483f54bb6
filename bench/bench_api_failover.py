#!/usr/bin/env python3
"""Issue 15's failover through the API: a burst of ticket creations and callbacks (HTTP, the real app over ASGI)
and voicemails filed by the voicemail service, against a primary + two replicas + three Sentinels on loopback
with `redis.min_replicas_ack: 1`; the primary is SIGKILLed mid-burst. Afterwards every write the API or the service
acknowledged is looked up on the new primary, and the voicemails kept on disk meanwhile are filed.

    .venv/bin/python bench/bench_api_failover.py [--seconds 12] [--kill-after 3] [--down-after-ms 1000]

Prints per kind: acknowledged, lost (must be 0), refused (503 or kept on disk: the client or the service retries),
latency p50/p95/p99/max of acknowledged writes (ms); then the error window (first to last refusal), how long
after the SIGKILL writes were acknowledged again, and the voicemails filed after the store came back.
Bounded: at most --seconds of load and 3,000 writes per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import httpx  # noqa: E402
from benchstats import summary  # noqa: E402

from atiende.runtime import Runtime  # noqa: E402
from config.loader import Loaded, load  # noqa: E402
from config.service import RedisConfig  # noqa: E402
from core.store import Store  # noqa: E402
from tests.conftest import voicemail_message  # noqa: E402
from tests.redis_ha import RedisHA  # noqa: E402
from voicemail.recording import pending as pending_sidecars  # noqa: E402
from voicemail.service import VoicemailPending  # noqa: E402

KEY = "bench-failover-key-0123456789"
MAX_PER_WORKER = 3000


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


class Kind:
    def __init__(self, name: str) -> None:
        self.name = name
        self.acked: list[str] = []
        self.latency_ms: list[float] = []
        self.refused: list[float] = []
        self.lost = 0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--kill-after", type=float, default=3.0)
    ap.add_argument("--down-after-ms", type=int, default=1000)
    args = ap.parse_args()
    print(f"load average before: {loadavg()}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ha = RedisHA(root / "ha", replicas=2, sentinels=3, down_after_ms=args.down_after_ms, failover_timeout_ms=3000)
        await asyncio.to_thread(ha.start)
        cfg = RedisConfig.model_validate({"sentinels": [f"{h}:{p}" for h, p in ha.sentinels], "prefix": "bfo",
                                          "sentinel_service": ha.service, "password": ha.password,
                                          "min_replicas_ack": 1, "wait_timeout_ms": 1000})
        store = Store.from_config(cfg)
        base = load(None, env={})
        settings = base.settings.model_copy(deep=True)
        settings.service.data_dir = root / "var"
        settings.redis = cfg
        rt = Runtime(Loaded(settings=settings, version=base.version, document=base.document), store=store)
        try:
            await run(rt, ha, args)
        finally:
            await store.close()
            rt.speech.close()
            await asyncio.to_thread(ha.stop)
    print(f"load average after: {loadavg()}")


async def run(rt: Runtime, ha: RedisHA, args: argparse.Namespace) -> None:
    from desk_api.app import create_app

    app = create_app(rt)
    await rt.desk.auth.create_api_key("bench", ["admin"], key=KEY)
    tickets, callbacks, voicemails = Kind("tickets (POST /api/v1/tickets)"), Kind("callbacks (POST /api/v1/callbacks)"), \
        Kind("voicemails (VoicemailService.complete)")
    pending: list[str] = []
    killed: list[float] = []
    resumed: list[float] = []
    t0 = time.monotonic()

    def running(i: int) -> bool:
        return time.monotonic() - t0 < args.seconds and i < MAX_PER_WORKER

    def note_success(kind: Kind, started: float, ident: str) -> None:
        kind.acked.append(ident)
        kind.latency_ms.append((time.monotonic() - started) * 1000)
        if killed and not resumed and any(k.refused for k in (tickets, callbacks, voicemails)):
            resumed.append(time.monotonic())

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                 headers={"X-API-Key": KEY}, timeout=30) as api:
        async def ticket_worker(w: int) -> None:
            i = 0
            while running(i):
                i += 1
                started = time.monotonic()
                r = await api.post("/api/v1/tickets", json={"queue": "N1",
                                                             "subject": f"Consulta {w}-{i}", "body": "x" * 300})
                if r.status_code == 201:
                    note_success(tickets, started, r.json()["ref"])
                elif r.status_code < 500:
                    raise SystemExit(f"the bench's own request is wrong: {r.status_code} {r.text[:300]}")
                else:
                    tickets.refused.append(time.monotonic())
                    await asyncio.sleep(0.05)

        async def callback_worker(w: int) -> None:
            i = 0
            while running(i):
                i += 1
                started = time.monotonic()
                r = await api.post("/api/v1/callbacks", json={"phone": f"+3460{w}{i:06d}"})
                if r.status_code == 201:
                    note_success(callbacks, started, r.json()["id"])
                elif r.status_code < 500:
                    raise SystemExit(f"the bench's own request is wrong: {r.status_code} {r.text[:300]}")
                else:
                    callbacks.refused.append(time.monotonic())
                    await asyncio.sleep(0.05)

        async def voicemail_worker(w: int) -> None:
            i = 0
            while running(i):
                i += 1
                call_id = f"bench-vm-{w}-{i}"
                rec = await asyncio.to_thread(lambda c=call_id: voicemail_message(rt.data_dir, c, seconds=1.0).finish())
                started = time.monotonic()
                try:
                    ref, _ = await rt.voicemail.complete(rec, caller=f"+3461{w}{i:06d}", trace_id=None, queue="N1",
                                                         transcript="mensaje de prueba")
                except VoicemailPending:
                    pending.append(call_id)  # on disk, filed when the store is back: not acknowledged yet
                    voicemails.refused.append(time.monotonic())
                    await asyncio.sleep(0.05)
                    continue
                note_success(voicemails, started, ref)

        async def chaos() -> None:
            await asyncio.sleep(args.kill_after)
            primary = await asyncio.to_thread(ha.primary_port)
            killed.append(time.monotonic())
            print(f"SIGKILL primary :{primary} at {killed[0] - t0:.1f} s")
            await asyncio.to_thread(ha.kill, primary or ha.data_ports[0])

        await asyncio.gather(chaos(), *(ticket_worker(w) for w in range(4)), *(callback_worker(w) for w in range(2)),
                             *(voicemail_worker(w) for w in range(2)))

        # the voicemails kept on disk are filed now that the store is back (what the node's catch-up loop does)
        filed_late: list[str] = []
        for _ in range(20):
            filed_late += await rt.voicemail.file_pending()
            if not await asyncio.to_thread(pending_sidecars, rt.data_dir):
                break
            await asyncio.sleep(0.5)

        for ref in tickets.acked:
            if (await api.get(f"/api/v1/tickets/{ref}")).status_code != 200:
                tickets.lost += 1
        for cb in callbacks.acked:
            if (await api.get(f"/api/v1/callbacks/{cb}")).status_code != 200:
                callbacks.lost += 1
        for ref in voicemails.acked + filed_late:
            if (await api.get(f"/api/v1/tickets/{ref}")).status_code != 200:
                voicemails.lost += 1

    print(f"{'kind':40} {'acked':>6} {'lost':>5} {'refused':>8} {'p50 ms':>8} {'p95':>8} {'p99':>8} {'max':>8}")
    for k in (tickets, callbacks, voicemails):
        s = summary(k.latency_ms)
        print(f"{k.name:40} {len(k.acked):6d} {k.lost:5d} {len(k.refused):8d} {s['p50']:8.1f} {s['p95']:8.1f} "
              f"{s['p99']:8.1f} {s['max']:8.1f}")
    refused = sorted(t for k in (tickets, callbacks, voicemails) for t in k.refused)
    if refused and killed:
        print(f"error window {refused[-1] - refused[0]:.2f} s (first refusal {refused[0] - killed[0]:+.2f} s after the "
              f"SIGKILL); acknowledged again {resumed[0] - killed[0]:.2f} s after it" if resumed else
              "no write acknowledged after the SIGKILL")
    else:
        print("no refusal seen")
    print(f"voicemails kept on disk during the failover: {len(pending)}, filed once the store was back: "
          f"{len(filed_late)}")


if __name__ == "__main__":
    asyncio.run(main())
