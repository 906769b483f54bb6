"""The store goes away during calls: callers keep hearing the IVR, nothing acknowledged is lost, and what waited
(voicemails on disk, call records in memory) is filed once the store is back. A real redis-server is stopped
and started again on the same port and data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from atiende.runtime import Runtime
from config.loader import Loaded
from core.clock import FixedClock
from core.redis_server import PrivateRedis, free_port
from core.store import Store
from ivr.textio import ScriptedIO
from tests.conftest import MADRID, voicemail_message
from voicemail.recording import PENDING_SUFFIX, voicemail_dir
from voicemail.service import VoicemailPending

pytestmark = pytest.mark.anyio
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=MADRID)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def rt(own_redis: PrivateRedis, loaded: Loaded, tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = loaded.settings.model_copy(deep=True)
    settings.service.data_dir = tmp_path / "var"
    store = Store(own_redis.url)
    yield Runtime(Loaded(settings=settings, version=loaded.version, document=loaded.document), store=store,
                  clock=FixedClock(MONDAY))
    await store.close()


async def test_a_caller_who_asks_for_a_person_hears_an_apology_and_a_voicemail_offer(
        rt: Runtime, own_redis: PrivateRedis) -> None:
    await rt.ivr.current_flows()  # the flows were read while the store was up; the node keeps serving them
    own_redis.stop()
    io = ScriptedIO([("say", "quiero hablar con una persona"), ("say", "no")], clock=rt.clock)
    session = await rt.ivr.run(io)
    said = " ".join(m.text for m in io.out)
    assert "incidencia técnica" in said, said
    assert "buzón de voz" in said  # offered a message instead of silence
    assert session.vars.get("degraded") is True and session.ended_by != "max_steps"
    assert [p.verb for p in session.path].count("enqueue") == 1


async def test_a_store_that_refuses_writes_gets_the_same_apology_not_a_hang_up(
        rt: Runtime, own_redis: PrivateRedis) -> None:
    await rt.ivr.current_flows()
    # What a primary says once its replicas are gone (deploy/redis: min-replicas-to-write 1): NOREPLICAS on every
    # write. That is a ResponseError, not a lost connection, and it used to end the call.
    await rt.store.redis.config_set("min-replicas-to-write", 1)
    io = ScriptedIO([("say", "quiero hablar con una persona"), ("say", "no")], clock=rt.clock)
    session = await rt.ivr.run(io)
    said = " ".join(m.text for m in io.out)
    assert "incidencia técnica" in said and "buzón de voz" in said, said
    assert session.vars.get("degraded") is True


async def test_self_service_answers_go_on_without_the_store(rt: Runtime, own_redis: PrivateRedis) -> None:
    await rt.ivr.current_flows()
    own_redis.stop()
    io = ScriptedIO([("say", "quiero pagar la tasa de la itv"), ("say", "no")], clock=rt.clock)
    session = await rt.ivr.run(io)
    assert session.intent is not None and session.answered, [m.text for m in io.out]
    assert not session.vars.get("degraded")


async def test_call_records_wait_in_memory_and_are_written_when_the_store_is_back(
        rt: Runtime, own_redis: PrivateRedis) -> None:
    await rt.ivr.current_flows()
    own_redis.stop()
    session = await rt.ivr.run(ScriptedIO([("say", "quiero pagar la tasa de la itv"), ("say", "no")],
                                          clock=rt.clock))
    assert await rt.ivr.flush_records() == 1  # still waiting: the store is down
    own_redis.start()
    assert await rt.ivr.flush_records() == 0
    assert (await rt.calls.get(session.call_id)).outcome == session.outcome


async def test_a_voicemail_recorded_while_the_store_is_away_becomes_its_ticket_once(
        rt: Runtime, own_redis: PrivateRedis) -> None:
    own_redis.stop()
    rec = voicemail_message(rt.data_dir, "call-outage").finish()
    with pytest.raises(VoicemailPending):
        await rt.voicemail.complete(rec, caller="+34600111222", trace_id="trace-outage", queue="N1",
                                    transcript="llamo por la beca de comedor", confidence=0.8)
    sidecars = list(voicemail_dir(rt.data_dir).glob(f"*{PENDING_SUFFIX}"))
    assert [p.name for p in sidecars] == [f"call-outage{PENDING_SUFFIX}"]
    assert await rt.voicemail.file_pending() == []  # still away: nothing filed, nothing dropped
    assert sidecars[0].exists()

    own_redis.start()
    refs = await rt.voicemail.file_pending()
    assert len(refs) == 1 and not sidecars[0].exists()
    ticket = await rt.desk.tickets.get(refs[0])
    assert ticket.kind == "voicemail" and ticket.trace_id == "trace-outage"
    assert [c.ticket_ref for c in await rt.callbacks.query()] == refs
    assert await rt.voicemail.file_pending() == []  # filed once
