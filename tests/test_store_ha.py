"""High availability of the store (issue 15): the Store through Sentinel across a real primary failover with WAIT,
leases with fencing tokens across processes, the private redis-server supervised and restarted (deploy/ is checked in
tests/test_deploy.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import redis

from config.service import RedisConfig
from core.lease import Lease, LeaseRunner, acquire, holder_of
from core.redis_server import PrivateRedis
from core.store import REDIS_ERRORS, NotDurable, Store
from tests.redis_ha import RedisHA, redis_server_exe

REPO = Path(__file__).resolve().parent.parent
NEEDS_REDIS = pytest.mark.skipif(redis_server_exe() is None, reason="redis-server is not installed (make test installs it)")


# -- the store through Sentinel --------------------------------------------------------------------------------

def _ha_store(ha: RedisHA, prefix: str, **kw: object) -> Store:
    options: dict[str, object] = {"min_replicas_ack": 1, "wait_timeout_ms": 1000, **kw}
    cfg = RedisConfig.model_validate({"sentinels": [f"{h}:{p}" for h, p in ha.sentinels], "prefix": prefix,
                                      "sentinel_service": ha.service, "password": ha.password, **options})
    return Store.from_config(cfg)


@NEEDS_REDIS
@pytest.mark.e2e
@pytest.mark.anyio
async def test_acknowledged_writes_survive_a_primary_sigkill(ha: RedisHA) -> None:
    store = _ha_store(ha, "fo")
    old_primary = ha.data_ports[0]
    assert ha.primary_port() == old_primary
    acked: list[str] = []
    errors: list[float] = []
    ok_after: list[float] = []
    killed_at: list[float] = []
    t0 = time.monotonic()

    async def writer(n: int) -> None:
        i = 0
        while time.monotonic() - t0 < 20 and i < 5000:  # bounded in time and count
            i += 1
            ref = f"{n}-{i}"
            try:
                # what a ticket creation writes, then the durability barrier, then (only then) the acknowledgement
                async with store.redis.pipeline(transaction=True) as pipe:
                    pipe.set(store.keys.ticket(ref), f'{{"ref":"{ref}"}}')
                    pipe.zadd(store.keys.tickets_all, {ref: time.time()})
                    await pipe.execute()
                await store.durable()
            except (*REDIS_ERRORS, NotDurable):
                errors.append(time.monotonic())
                await asyncio.sleep(0.05)
                continue
            acked.append(ref)
            if killed_at and errors and len(ok_after) < 200:
                ok_after.append(time.monotonic())
            if len(ok_after) >= 200:
                return

    async def chaos() -> None:
        await asyncio.sleep(1.0)
        killed_at.append(time.monotonic())
        await asyncio.to_thread(ha.kill, old_primary)

    try:
        await asyncio.gather(chaos(), *(writer(n) for n in range(8)))
        assert killed_at and ok_after, f"writes did not resume after the failover ({len(errors)} errors)"
        new_primary = ha.primary_port()
        assert new_primary is not None and new_primary != old_primary
        assert await store.role() == "master"
        present = await store.redis.zmscore(store.keys.tickets_all, acked)
        missing = [ref for ref, score in zip(acked, present, strict=True) if score is None]
        raws = await store.redis.mget([store.keys.ticket(ref) for ref in acked])
        missing += [ref for ref, raw in zip(acked, raws, strict=True) if raw is None]
        window = (max(errors) - min(errors)) if errors else 0.0
        first_ok = min(ok_after) - killed_at[0]
        print(f"\nfailover: {len(acked)} writes acknowledged, {len(errors)} failed; error window {window:.2f} s "
              f"(first failure to last), first acknowledged write {first_ok:.2f} s after the SIGKILL; "
              f"primary {old_primary} -> {new_primary}")
        assert not missing, f"{len(missing)} acknowledged writes lost: {missing[:5]}"
        assert first_ok < 10, first_ok
    finally:
        await store.close()


@NEEDS_REDIS
@pytest.mark.e2e
@pytest.mark.anyio
async def test_durable_fails_plainly_when_no_replica_answers(ha: RedisHA) -> None:
    store = _ha_store(ha, "nd", wait_timeout_ms=200)
    store.min_replicas_ack = 3  # more replicas than exist: WAIT cannot be met
    try:
        await store.redis.set(store.keys.ticket("x"), "1")
        with pytest.raises(NotDurable):
            await store.durable()
        store.min_replicas_ack = 2
        await store.durable()  # both replicas confirm
        dedicated = store.dedicated(socket_timeout=2)  # the live-event reader's connection follows Sentinel too
        try:
            assert await dedicated.get(store.keys.ticket("x")) == "1"
        finally:
            await dedicated.aclose()
            store.release_dedicated(dedicated)
    finally:
        await store.close()


def test_redis_config_rejects_bad_sentinels() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        RedisConfig(sentinels=["localhost"])
    with pytest.raises(ValueError, match="neither"):
        Store.from_config(RedisConfig())


# -- leases ------------------------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_lease_acquire_renew_release_and_fencing(store: Store) -> None:
    a = await acquire(store, "job", "node-a", ttl=2.0)
    assert a is not None and a.held
    assert await acquire(store, "job", "node-b", ttl=2.0) is None  # held: nobody else gets it
    assert await holder_of(store, "job") == (a.token, "node-a")
    assert await a.renew() and await a.check()
    assert await a.release()
    b = await acquire(store, "job", "node-b", ttl=2.0)
    assert b is not None and b.token > a.token  # fencing tokens only grow
    assert not await a.renew() and not await a.check()  # the old holder cannot extend someone else's lease
    assert not await a.release()
    assert await holder_of(store, "job") == (b.token, "node-b")
    await b.release()
    assert await holder_of(store, "job") is None


@pytest.mark.anyio
async def test_runner_stops_its_job_within_the_ttl_when_the_lease_is_taken(store: Store) -> None:
    ttl = 0.9
    runs: list[str] = []
    stopped = asyncio.Event()

    async def job(lease: Lease) -> None:
        runs.append(f"start {lease.token}")
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    runner = LeaseRunner(store, "lost", holder="node-a", ttl=ttl)
    task = asyncio.create_task(runner.run(job))
    try:
        for _ in range(50):
            if runner.leading:
                break
            await asyncio.sleep(0.02)
        assert runner.leading
        # someone else's lease now (an operator, or a holder after this one's key expired during a pause)
        await store.redis.set(store.keys.lease("lost"), "999999 intruder", px=5000)
        t = time.monotonic()
        await asyncio.wait_for(stopped.wait(), ttl + 0.5)
        assert time.monotonic() - t <= ttl
        assert not runner.leading
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert runs == [runs[0]]


_HOLDER = """
import asyncio, sys
from core.lease import LeaseRunner
from core.store import Store

async def main() -> None:
    store = Store(sys.argv[1], prefix=sys.argv[2])
    async def job(lease):
        print(f"holding {lease.token}", flush=True)
        await asyncio.sleep(3600)
    await LeaseRunner(store, "callbacks", holder="node-a", ttl=float(sys.argv[3])).run(job)

asyncio.run(main())
"""


@pytest.mark.anyio
async def test_another_node_takes_over_within_seconds_when_the_holder_dies(store: Store,
                                                                          redis_server: PrivateRedis) -> None:
    ttl = 2.0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, redis_server.url, store.keys.p, str(ttl),
        stdout=asyncio.subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    taken: list[float] = []
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line.startswith(b"holding"), line
        first_token = int(line.split()[1])

        async def job(lease: Lease) -> None:
            taken.append(time.monotonic())
            assert lease.token > first_token
            await asyncio.sleep(60)

        runner = LeaseRunner(store, "callbacks", holder="node-b", ttl=ttl, retry=0.2)
        task = asyncio.create_task(runner.run(job))
        await asyncio.sleep(ttl * 1.5)
        assert not taken, "node B ran the job while node A held the lease"
        killed = time.monotonic()
        proc.send_signal(signal.SIGKILL)  # dies without releasing: its lease must expire
        await proc.wait()
        for _ in range(100):
            if taken:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert taken, "node B never took the lease over"
        takeover = taken[0] - killed
        print(f"\nlease takeover {takeover:.2f} s after the holder's SIGKILL (ttl {ttl} s)")
        assert takeover <= ttl + 1.0  # expiry (<= ttl after the last renewal) + one retry, with slack for a busy box
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- the private redis-server, supervised --------------------------------------------------------------------------

@NEEDS_REDIS
def test_private_redis_is_restarted_with_its_data_and_requires_its_password(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis")
    states: list[bool] = []
    server.start()
    server.supervise(states.append)
    try:
        assert server.password and f":{server.password}@" in server.url
        conf = tmp_path / "redis" / "redis.conf"
        assert conf.stat().st_mode & 0o777 == 0o600
        assert server.proc is not None
        assert server.password.encode() not in Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        anon = redis.Redis(host=server.host, port=server.port, socket_timeout=2)
        try:
            with pytest.raises(redis.AuthenticationError):
                anon.set("k", "v")
        finally:
            anon.close()
        client = redis.Redis.from_url(server.url, socket_timeout=2, decode_responses=True)
        try:
            for i in range(200):
                client.set(f"k{i}", str(i))  # appendfsync always: on disk when SET returns
            old_pid = server.proc.pid
            t = time.monotonic()
            os.kill(old_pid, signal.SIGKILL)
            while (not server.is_up or server.proc.pid == old_pid) and time.monotonic() - t < 15:
                time.sleep(0.02)
            back = time.monotonic() - t
            assert server.is_up and server.proc.pid != old_pid and server.restarts == 1
            assert states == [False, True]
            assert client.mget([f"k{i}" for i in range(200)]) == [str(i) for i in range(200)]
            print(f"\nprivate redis-server back {back:.2f} s after SIGKILL")
            # no zombie: the supervisor reaped the dead one
            assert not Path(f"/proc/{old_pid}").exists() or b"Z" not in Path(f"/proc/{old_pid}/stat").read_bytes()
        finally:
            client.close()
    finally:
        server.stop()
    assert not server.is_up and server.proc is not None and server.proc.poll() is not None


@NEEDS_REDIS
@pytest.mark.anyio
async def test_the_store_carries_on_across_a_private_redis_restart_and_leases_stop_while_it_is_down(
        tmp_path: Path) -> None:
    """As `atiende run` wires it: the store from the config with the private server's URL (password included), the
    supervisor's state as an asyncio.Event; a lease's job stops within its TTL while the store is away."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    loop = asyncio.get_running_loop()
    up = asyncio.Event()
    up.set()
    server.supervise(lambda ok: loop.call_soon_threadsafe(up.set if ok else up.clear))
    store = Store.from_config(RedisConfig(prefix="sup"), url=server.url)
    ttl = 1.0
    stopped = asyncio.Event()

    async def job(lease: Lease) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    runner = LeaseRunner(store, "retention", holder="node1", ttl=ttl, retry=0.2)
    task = asyncio.create_task(runner.run(job))
    try:
        await store.redis.set(store.keys.ticket("A"), "kept")
        for _ in range(50):
            if runner.leading:
                break
            await asyncio.sleep(0.02)
        assert runner.leading
        server.RESTART_BACKOFF = (2 * ttl,)  # an outage longer than the TTL
        assert server.proc is not None
        server.proc.kill()
        t = time.monotonic()
        await asyncio.wait_for(stopped.wait(), ttl + 1.0)
        assert time.monotonic() - t <= ttl + 0.3 and not runner.leading
        assert not up.is_set() and not server.is_up  # what /healthz reads meanwhile
        await asyncio.wait_for(up.wait(), 15)
        assert server.is_up
        assert await store.redis.get(store.keys.ticket("A")) == "kept"
        for _ in range(100):  # the lease is taken again once the store is back
            if runner.leading:
                break
            await asyncio.sleep(0.05)
        assert runner.leading
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
        await asyncio.to_thread(server.stop)
