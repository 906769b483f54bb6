"""Callback claims that nothing can strand (issue 15): the claim is one atomic step with its status, a worker whose
lease went to another node cannot claim (fencing), a worker stopped mid-call gives its callback back, and a claim
abandoned by a killed node is handed out again once it runs out. Real Redis, real leases, real worker."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from atiende.runtime import Runtime
from core.clock import FixedClock
from core.lease import LeaseLost, acquire
from voicemail.callbacks import CLAIM_HOLD, CallbackService

pytestmark = pytest.mark.anyio


async def _state(svc: CallbackService, runtime: Runtime, cb_id: str) -> tuple[str, bool, bool]:
    """(status, in the due list, in the claimed list): what the claim must keep consistent."""
    r, k = runtime.store.redis, runtime.store.keys
    cb = await svc.get(cb_id)
    return (cb.status, await r.zscore(k.callbacks_due, cb_id) is not None,
            await r.zscore(k.callbacks_claimed, cb_id) is not None)


async def test_a_worker_whose_lease_was_taken_over_cannot_claim(runtime: Runtime, clock: FixedClock) -> None:
    svc = runtime.callbacks
    cb = await svc.create(phone="600000001", ticket_ref=None, due_at=clock.now())
    store = runtime.store
    stale = await acquire(store, "callbacks", "node-a", ttl=30.0)
    assert stale is not None
    # node A is paused past its TTL: its key expires and node B takes the lease
    await store.redis.delete(store.keys.lease("callbacks"))
    fresh = await acquire(store, "callbacks", "node-b", ttl=30.0)
    assert fresh is not None and fresh.token > stale.token
    with pytest.raises(LeaseLost):
        await runtime.callback_worker.run_once(stale)  # node A wakes up believing it still holds the lease
    assert await _state(svc, runtime, cb.id) == ("pending", True, False)
    taken = await svc.claim_next("worker", lease=fresh)
    assert taken is not None and taken.id == cb.id and taken.claimed_by == "worker"
    assert await _state(svc, runtime, cb.id) == ("in_progress", False, True)


async def test_a_claim_interrupted_anywhere_leaves_the_callback_claimed_or_due(runtime: Runtime,
                                                                              clock: FixedClock) -> None:
    """A task cancelled at any point of claim_next (node draining, request aborted): never out of both lists."""
    svc = runtime.callbacks
    outcomes: set[str] = set()
    for steps in range(40):
        cb = await svc.create(phone="600000002", ticket_ref=None, due_at=clock.now())
        task = asyncio.create_task(svc.claim_next("ana"))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        state = await _state(svc, runtime, cb.id)
        assert state in (("pending", True, False), ("in_progress", False, True)), (steps, state)
        outcomes.add(state[0])
        if state[0] == "in_progress":
            await svc.release(cb.id)
        await svc.record_attempt(cb.id, "resolved", "ana")  # out of the way of the next round
    assert outcomes == {"pending", "in_progress"}  # both sides of the claim were interrupted


class _RingingForever:
    """A line whose callee never answers (the worker is stopped while the phone rings)."""

    def __init__(self) -> None:
        self.dialing = asyncio.Event()

    async def dial(self, uri: str, *, ring_timeout: float = 30.0, trace_id: str | None = None, **_: Any) -> Any:
        self.dialing.set()
        await asyncio.Event().wait()


async def test_a_worker_stopped_mid_call_gives_the_callback_back(runtime: Runtime, clock: FixedClock) -> None:
    svc = runtime.callbacks
    cb = await svc.create(phone="600000003", ticket_ref=None, due_at=clock.now())
    worker = runtime.callback_worker
    line = _RingingForever()
    worker.dialer = line  # type: ignore[assignment]
    task = asyncio.create_task(worker.run_once())
    await line.dialing.wait()
    assert await _state(svc, runtime, cb.id) == ("in_progress", False, True)
    task.cancel()  # the node drains, or the lease runner stops the job
    await asyncio.gather(task, return_exceptions=True)
    for _ in range(100):  # the release runs shielded, beside the cancelled task
        if (await svc.get(cb.id)).status == "pending":
            break
        await asyncio.sleep(0.01)
    assert await _state(svc, runtime, cb.id) == ("pending", True, False)
    again = await svc.claim_next("ana")
    assert again is not None and again.id == cb.id


async def test_a_claim_abandoned_by_a_dead_node_is_handed_out_once_it_runs_out(runtime: Runtime,
                                                                               clock: FixedClock) -> None:
    svc = runtime.callbacks
    cb = await svc.create(phone="600000004", ticket_ref=None, due_at=clock.now())
    held = await svc.claim_next("worker", hold=timedelta(minutes=10))
    assert held is not None and held.claimed_until == clock.now() + timedelta(minutes=10)
    # the worker's node is killed here: nobody records an attempt or releases the claim
    assert await svc.claim_next("ana") is None  # still held
    clock.set(clock.now() + timedelta(minutes=9))
    assert await svc.claim_next("ana") is None
    clock.set(clock.now() + timedelta(minutes=2))
    taken = await svc.claim_next("ana")
    assert taken is not None and taken.id == cb.id and taken.claimed_by == "ana"
    assert taken.claimed_until == clock.now() + CLAIM_HOLD
    # the late worker's release does not take the callback from the agent who has it now
    assert (await svc.release(cb.id, "worker")).claimed_by == "ana"
    done = await svc.record_attempt(cb.id, "reached", "ana")
    assert done.status == "done" and done.claimed_by is None
    assert await _state(svc, runtime, cb.id) == ("done", False, False)


async def test_claims_left_by_an_older_version_are_handed_out_again(runtime: Runtime, clock: FixedClock) -> None:
    """Before fenced claims (9d5f546) a claim took the callback off the due list and then saved it `in_progress`:
    no deadline, in no claimed list, so `reclaim` never saw it, and a claim cut between the two steps left it
    `pending` off the list. The worker (even with auto_dial off: agents dial, the worker minds the claims) gives
    each such claim a deadline a full hold away, after which it is handed out again like any other."""
    import json

    svc = runtime.callbacks
    r, k = runtime.store.redis, runtime.store.keys
    legacy = await svc.create(phone="600000005", ticket_ref=None, due_at=clock.now())
    doc = legacy.model_dump(mode="json", exclude={"claimed_until"}) | {"status": "in_progress", "claimed_by": "ana"}
    await r.set(k.callback(legacy.id), json.dumps(doc))
    await r.zrem(k.callbacks_due, legacy.id)
    cut = await svc.create(phone="600000006", ticket_ref=None, due_at=clock.now())
    await r.zrem(k.callbacks_due, cut.id)
    assert await svc.claim_next("luis") is None  # both stranded
    clock.set(clock.now() + CLAIM_HOLD + timedelta(minutes=1))
    assert await svc.claim_next("luis") is None  # and they stay so, however long one waits

    worker = runtime.callback_worker
    assert not runtime.settings.voicemail.auto_dial
    worker.start()
    try:
        for _ in range(100):  # bounded: 5 s
            if await _state(svc, runtime, legacy.id) == ("in_progress", False, True) \
                    and await _state(svc, runtime, cut.id) == ("pending", True, False):
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    adopted = await svc.get(legacy.id)
    assert adopted.claimed_by == "ana" and adopted.claimed_until == clock.now() + CLAIM_HOLD  # ana may still be on it
    again = await svc.claim_next("luis")
    assert again is not None and again.id == cut.id  # the cut claim: due again at once
    await svc.record_attempt(cut.id, "reached", "luis")
    assert await svc.claim_next("luis") is None
    clock.set(clock.now() + CLAIM_HOLD + timedelta(seconds=1))
    taken = await svc.claim_next("luis")
    assert taken is not None and taken.id == legacy.id and taken.claimed_by == "luis"


async def test_a_callback_taken_by_an_older_version_meanwhile_is_not_handed_out_again(runtime: Runtime) -> None:
    """An older version claims in two steps (off the due list, then the document); the adoption scan between them
    listed it as due again, and the next claim gave it to a second agent."""
    from voicemail.callbacks import dumps

    cbs, r, k = runtime.callbacks, runtime.store.redis, runtime.store.keys
    cb = await cbs.create(phone="+34600111222", ticket_ref=None, due_at=runtime.clock.now())
    await r.zrem(k.callbacks_due, cb.id)  # the older node's first step
    await cbs.adopt_unindexed()  # the scan finds it pending off the list: due again
    old = await cbs.get(cb.id)
    old.status, old.claimed_by = "in_progress", "agent:old-node-A"
    await r.set(k.callback(cb.id), dumps(old))  # the older node's second step
    assert await cbs.claim_next("agent:new-node-B") is None
    assert (await cbs.get(cb.id)).claimed_by == "agent:old-node-A"
    assert await r.zscore(k.callbacks_due, cb.id) is None
