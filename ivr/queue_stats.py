"""Live figures of a queue for the wallboard: who waits and for how long, how fast calls are answered, how
many give up. Read from the keys the call distribution writes (`ivr.distribution.AgentQueue`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from core.clock import Clock
from core.store import Store


class QueueStats(BaseModel):
    queue: str
    waiting: int
    longest_wait_s: float | None
    answered: int  # in the window
    abandoned: int  # in the window
    service_level: float | None  # share answered within the target, of answered + abandoned after the target
    abandon_rate: float | None
    average_wait_s: float | None


async def queue_stats(store: Store, clock: Clock, queue: str, *, window_s: float, target_s: float) -> QueueStats:
    r, k = store.redis, store.keys
    now = clock.now().timestamp()
    since = now - window_s
    async with r.pipeline(transaction=False) as pipe:
        pipe.zcard(k.calls_waiting(queue))
        pipe.zrange(k.calls_waiting(queue), 0, 0, withscores=True)
        pipe.zrangebyscore(k.queue_answers(queue), since, "+inf")
        pipe.zrangebyscore(k.queue_abandons(queue), since, "+inf", withscores=True)
        waiting, oldest, answers, abandons = await pipe.execute()
    # transferred callers sit at score 0 (the head): their wait is not a real clock reading
    longest = next((now - float(score) for _, score in oldest if float(score) > 0), None)
    waits = [float(str(m).rsplit("|", 1)[1]) for m in answers if "|" in str(m)]
    abandoned: Any = abandons
    n_answered, n_abandoned = len(waits), len(abandoned)
    within = sum(1 for w in waits if w <= target_s)
    # Calls abandoned before the target are not held against the service level (the usual convention).
    late_abandons = n_abandoned  # when each caller had waited is not kept; counted conservatively
    offered = n_answered + late_abandons
    return QueueStats(queue=queue, waiting=int(waiting), longest_wait_s=round(longest, 1) if longest is not None else None,
                      answered=n_answered, abandoned=n_abandoned,
                      service_level=round(within / offered, 3) if offered else None,
                      abandon_rate=round(n_abandoned / offered, 3) if offered else None,
                      average_wait_s=round(sum(waits) / n_answered, 1) if n_answered else None)
