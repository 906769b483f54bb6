"""One OS process of the claim race (tests/test_desk_race.py): N concurrent claims of one ticket, results as JSON.

    python tests/desk_race_worker.py REDIS_URL PREFIX REF1,REF2,... N NAME START_AT_EPOCH

Ticket i is raced at START_AT + i * 0.5 s, so both processes start each race together.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from atiende.runtime import Runtime
from config.loader import load
from core.errors import AtiendeError
from core.store import Store


async def main(url: str, prefix: str, refs: str, n: int, name: str, start_at: float) -> None:
    store = Store(url, prefix=prefix)
    rt = Runtime(load(None, env={}), store=store)
    tickets = rt.desk.tickets
    await store.redis.ping()  # connect before the start line, so both processes start together

    async def one(ref: str, i: int) -> str:
        try:
            t = await tickets.claim(ref, f"{name}-{i}")
            return f"won:{t.assignee}"
        except AtiendeError as exc:
            return exc.error_id

    results: dict[str, list[str]] = {}
    for k, ref in enumerate(refs.split(",")):
        await asyncio.sleep(max(0.0, start_at + 0.5 * k - time.time()))
        results[ref] = list(await asyncio.gather(*(one(ref, i) for i in range(n))))
    await store.close()
    print(json.dumps(results))


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), a[4], float(a[5])))
