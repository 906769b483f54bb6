"""A node's readiness (what Kamailio's OPTIONS probes see) and the store: a failover window does not make every
node not ready at once (the dispatcher would have nowhere to send a call); a store away for longer does."""

from __future__ import annotations

import pytest

from atiende.node import STORE_GRACE_S, NodeState

pytestmark = pytest.mark.anyio


class _Store:
    def __init__(self) -> None:
        self.up = True

    async def ping(self, within: float = 0.5) -> bool:
        return self.up


async def test_a_store_away_for_a_failover_keeps_the_node_ready_and_longer_does_not() -> None:
    now = [100.0]
    store = _Store()
    node = NodeState(store, monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert await node.check_store() and node.ready
    store.up = False
    assert not await node.check_store() and node.ready  # the first failed probe
    now[0] += STORE_GRACE_S - 1  # a Sentinel failover takes seconds
    assert not await node.check_store() and node.ready
    store.up = True
    assert await node.check_store() and node.ready
    store.up = False
    await node.check_store()
    now[0] += STORE_GRACE_S + 0.1  # away for longer: this node's store is out, the dispatcher prefers others
    await node.check_store()
    assert not node.ready and node.reasons() == ["store unreachable"]
    store.up = True
    assert await node.check_store() and node.ready
    node.drain()
    assert not node.ready and node.reasons() == ["draining"]
