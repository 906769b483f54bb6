"""Two OS processes race 50 claims of one ticket (and of one waiting queue): exactly one claim wins."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from asyncio.subprocess import PIPE
from collections import Counter
from pathlib import Path

import pytest

from atiende.runtime import Runtime
from core.redis_server import PrivateRedis

WORKER = Path(__file__).with_name("desk_race_worker.py")

pytestmark = pytest.mark.anyio


async def test_fifty_claims_from_two_processes_one_winner(runtime: Runtime, redis_server: PrivateRedis) -> None:
    desk = runtime.desk
    # three races: a race that passes once by luck should not pass three times
    refs = [(await desk.tickets.create(channel="webchat", queue="N1", subject=f"carrera {i}")).ref for i in range(3)]
    start_at = time.time() + 2.5  # both interpreters are up and connected by then
    procs = [await asyncio.create_subprocess_exec(sys.executable, str(WORKER), redis_server.url, runtime.store.keys.p,
                                                  ",".join(refs), "25", name, str(start_at), stdout=PIPE, stderr=PIPE)
             for name in ("p1", "p2")]
    results: dict[str, list[str]] = {ref: [] for ref in refs}
    for p in procs:
        out, err = await asyncio.wait_for(p.communicate(), 60)
        assert p.returncode == 0, err.decode()
        for ref, got in json.loads(out).items():
            results[ref] += got
    for ref in refs:
        outcome = Counter(r if not r.startswith("won:") else "won" for r in results[ref])
        assert outcome == {"won": 1, "already-claimed": 49}, outcome
        winner = next(r[4:] for r in results[ref] if r.startswith("won:"))
        assert {r[4:6] for r in results[ref] if r.startswith("won:")} <= {"p1", "p2"}
        stored = await desk.tickets.get(ref)
        assert stored.assignee == winner and stored.status == "assigned" and stored.version == 2
        claims = [i for i in await desk.tickets.interactions(ref) if i.kind == "status_change"]
        assert len(claims) == 1  # one claim recorded, no lost or doubled update
    assert await desk.tickets.query(queue="N1", waiting=True) == []
