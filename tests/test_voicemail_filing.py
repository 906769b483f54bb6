"""A voicemail is filed once and only marked filed once its ticket and callback are on a replica (issue 15).

Real Redis throughout: a primary with a replica that stops answering (SIGSTOP) for the durability case, the session
server for the retries; the desk is the real one, cut right after it created the ticket for the interrupted case."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from atiende.runtime import Runtime
from atiende.wiring import DeskVoicemail
from config.loader import Loaded
from core.clock import FixedClock
from core.store import NotDurable, Store
from tests.conftest import voicemail_message
from tests.redis_ha import RedisHA, redis_server_exe
from voicemail.recording import pending
from voicemail.service import VoicemailPending, VoicemailService, callback_id_for

pytestmark = pytest.mark.anyio


def _runtime(loaded: Loaded, store: Store, clock: FixedClock, tmp_path: Path) -> Runtime:
    settings = loaded.settings.model_copy(deep=True)
    settings.service.data_dir = tmp_path / "var"
    return Runtime(Loaded(settings=settings, version=loaded.version, document=loaded.document), store=store, clock=clock)


async def _caught_up(store: Store) -> None:
    """Until the resumed replica confirms writes again (it answers the primary's GETACK once it has caught up)."""
    for _ in range(50):
        try:
            await store.durable()
            return
        except NotDurable:
            continue
    raise AssertionError("the replica never confirmed a write again")


async def _tickets_of(rt: Runtime, trace_id: str) -> list[str]:
    return [str(e["id"]) for e in await rt.desk.tickets.trace(trace_id) if e.get("kind") == "ticket"]


async def _callbacks_of(rt: Runtime, ref: str) -> list[str]:
    return [c.id for c in await rt.callbacks.query() if c.ticket_ref == ref]


@pytest.fixture
async def replicated(loaded: Loaded, clock: FixedClock, tmp_path: Path) -> AsyncIterator[tuple[Runtime, RedisHA]]:
    """A runtime on a primary with one replica (no Sentinels) that must confirm every acknowledged write."""
    if redis_server_exe() is None:
        pytest.skip("redis-server is not installed")
    ha = RedisHA(tmp_path / "ha", replicas=1, sentinels=0)
    ha.start()
    store = Store(ha.url(ha.data_ports[0]), prefix="vmd", min_replicas_ack=1, wait_timeout_ms=200)
    try:
        yield _runtime(loaded, store, clock, tmp_path), ha
    finally:
        await store.close()
        ha.stop()


@pytest.mark.e2e
async def test_a_voicemail_is_marked_filed_only_once_a_replica_holds_it(replicated: tuple[Runtime, RedisHA]) -> None:
    rt, ha = replicated
    replica, store = ha.procs[ha.data_ports[1]], rt.store
    vm = rt.voicemail
    rec = voicemail_message(rt.data_dir, "call-dur").finish()
    replica.send_signal(signal.SIGSTOP)  # the replica confirms nothing
    try:
        with pytest.raises(VoicemailPending):
            await vm.complete(rec, caller="+34600111222", trace_id="trace-dur", queue="N1",
                              transcript="llamo por el padrón", confidence=0.9)
        note = json.loads(await store.redis.get(store.keys.voicemail("call-dur")))
        assert note["status"] == "filing"  # not "done": nothing said it is safe
        assert [m["call_id"] for _, m in pending(rt.data_dir)] == ["call-dur"]  # still waiting on disk
    finally:
        replica.send_signal(signal.SIGCONT)
    await _caught_up(store)
    refs = await vm.file_pending()  # what the catch-up loop does once the replicas answer again
    assert refs == await _tickets_of(rt, "trace-dur")  # one ticket, the one the first try made
    assert await _callbacks_of(rt, refs[0]) == [callback_id_for("call-dur")]
    note = json.loads(await store.redis.get(store.keys.voicemail("call-dur")))
    assert note["status"] == "done" and note["ticket"] == refs[0]
    assert pending(rt.data_dir) == []
    with ha.client(ha.data_ports[1]) as c:  # and it is on the replica
        assert c.exists(store.keys.ticket(refs[0]), store.keys.callback(callback_id_for("call-dur"))) == 2


class _CutAfterTicket:
    """The real desk, with the connection lost right after it created the ticket: the reply never arrives."""

    def __init__(self, desk: DeskVoicemail) -> None:
        self.desk = desk
        self.filed: list[str] = []

    async def file_voicemail(self, **kw: Any) -> tuple[str, bool]:
        ref, _ = await self.desk.file_voicemail(**kw)
        self.filed.append(ref)
        raise ConnectionError("Connection closed by server.")

    async def status_text(self, ref: str, spoken: bool = False) -> str | None:
        return await self.desk.status_text(ref, spoken)

    async def note_callback_attempt(self, ref: str, callback_id: str, outcome: str, note: str) -> None:
        await self.desk.note_callback_attempt(ref, callback_id, outcome, note)


@pytest.mark.parametrize("trace_id", ["trace-cut", None])
async def test_a_retry_after_the_ticket_was_made_does_not_make_a_second(runtime: Runtime, trace_id: str | None) -> None:
    cut = _CutAfterTicket(DeskVoicemail(runtime.desk))
    first_try = VoicemailService(runtime.current_settings, runtime.store, runtime.clock, runtime.speech, cut,
                                 runtime.callbacks, runtime.recordings)
    rec = voicemail_message(runtime.data_dir, "call-cut").finish()
    with pytest.raises(VoicemailPending):
        await first_try.complete(rec, caller="+34600333444", trace_id=trace_id, queue="N1", transcript="hola")
    assert len(cut.filed) == 1
    refs = await runtime.voicemail.file_pending()
    assert refs == cut.filed
    note = json.loads(await runtime.store.redis.get(runtime.store.keys.voicemail("call-cut")))
    assert await _tickets_of(runtime, note["trace_id"]) == cut.filed
    if trace_id is not None:
        assert note["trace_id"] == trace_id
    assert await _callbacks_of(runtime, refs[0]) == [callback_id_for("call-cut")]
    # filed: another try (a restart's recovery, say) returns the same ticket and callback
    ref, cb = await runtime.voicemail.complete(rec, caller="+34600333444", trace_id=trace_id, queue="N1")
    assert ref == refs[0] and cb.id == callback_id_for("call-cut")
    assert len(await runtime.callbacks.query()) == 1


@pytest.mark.e2e
async def test_recovery_keeps_every_cut_message_when_the_replica_does_not_confirm(
        replicated: tuple[Runtime, RedisHA]) -> None:
    rt, ha = replicated
    replica, store = ha.procs[ha.data_ports[1]], rt.store
    vm = rt.voicemail
    for n in (1, 2):
        writer = await vm.begin(f"call-r{n}", caller=f"+3460044455{n}", trace_id=f"trace-r{n}", queue="N1")
        for _ in range(60):
            writer.write(b"\x10\x00" * 160)
        writer.abort()  # a crash mid-message, twice
    replica.send_signal(signal.SIGSTOP)
    try:
        assert await vm.recover() == []  # nothing could be confirmed, nothing is marked filed
        assert sorted(m["call_id"] for _, m in pending(rt.data_dir)) == ["call-r1", "call-r2"]
    finally:
        replica.send_signal(signal.SIGCONT)
    await _caught_up(store)
    refs = await vm.file_pending()
    assert len(refs) == 2
    for n, ref in zip((1, 2), refs, strict=True):
        assert await _tickets_of(rt, f"trace-r{n}") == [ref]
        assert await _callbacks_of(rt, ref) == [callback_id_for(f"call-r{n}")]


async def test_a_ticket_lost_in_a_failover_after_it_was_noted_is_filed_again(loaded: Loaded, clock: FixedClock,
                                                                            tmp_path: Path, redis_server: Any) -> None:
    """The ticket went to the old primary and was lost; the note naming it and the callback reached the new one
    (the try ended NotDurable). The retry must not mark filed a ticket that does not exist."""
    store = Store(redis_server.url, prefix=f"vmg{uuid.uuid4().hex[:8]}", min_replicas_ack=1, wait_timeout_ms=20)
    try:
        rt = _runtime(loaded, store, clock, tmp_path)
        rec = voicemail_message(rt.data_dir, "call-ghost").finish()
        with pytest.raises(VoicemailPending):  # this server has no replica: nothing is confirmed
            await rt.voicemail.complete(rec, caller="+34600777888", trace_id="trace-ghost", queue="N1", transcript="x")
        note = json.loads(await store.redis.get(store.keys.voicemail("call-ghost")))
        lost = note["ticket"]
        # what the new primary lacks: the ticket and its trace entry, written on the old one only
        await store.redis.delete(store.keys.ticket(lost), store.keys.trace("trace-ghost"))
        store.min_replicas_ack = 0  # the retry's writes are confirmed
        refs = await rt.voicemail.file_pending()
        assert len(refs) == 1 and refs[0] != lost
        assert (await rt.desk.tickets.get(refs[0])).meta["voicemail"] == "call-ghost"
        cbs = await rt.callbacks.query()
        assert [(c.id, c.ticket_ref) for c in cbs] == [(callback_id_for("call-ghost"), refs[0])]
    finally:
        await store.close()


async def test_a_message_cut_on_a_call_whose_id_the_caller_made_unusable_is_recovered_with_its_caller(
        runtime: Runtime) -> None:
    """The Call-ID is the caller's text; the message is filed under a hashed id, and its note (the caller to call
    back) under the same one, so a crash's recovery still finds who to call."""
    odd = "../" + "x" * 300
    writer = await runtime.voicemail.begin(odd, caller="+34600555666", trace_id="t-odd", queue="N1")
    assert writer.call_id.startswith("c-") and writer.part_path.parent == runtime.data_dir / "voicemail"
    for _ in range(100):
        writer.write(b"\x10\x00" * 160)
    writer.abort()  # the node dies mid-message
    refs = await runtime.voicemail.recover()
    assert len(refs) == 1
    callbacks = await runtime.callbacks.query()
    assert [c.phone for c in callbacks] == ["+34600555666"]
