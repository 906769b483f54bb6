"""Voicemail to ticket to callback, and the callback work items, over the real Redis and calendar."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from atiende.runtime import Runtime
from core.clock import FixedClock
from core.errors import Conflict
from tests.conftest import MADRID, voicemail_message

pytestmark = pytest.mark.anyio
FRIDAY_EVE = datetime(2026, 10, 9, 19, 0, tzinfo=MADRID)  # Monday 12 October is a national holiday
TUESDAY_OPEN = datetime(2026, 10, 13, 8, 30, tzinfo=MADRID)


async def test_friday_evening_message_is_called_back_tuesday(runtime: Runtime, clock: FixedClock,
                                                              client: httpx.AsyncClient) -> None:
    clock.set(FRIDAY_EVE)
    vm = runtime.voicemail
    rec = voicemail_message(runtime.data_dir, "call-fri").finish()
    ref, cb = await vm.complete(rec, caller="+34600111222", trace_id="trace-fri", queue="N1",
                                transcript="llamo por la ayuda del alquiler", confidence=0.8)
    assert cb.due_at == TUESDAY_OPEN and cb.ticket_ref == ref and cb.voicemail and cb.voicemail.complete
    ticket = await runtime.desk.tickets.get(ref)  # type: ignore[attr-defined]
    assert ticket.kind == "voicemail" and ticket.queue == "N1" and ticket.trace_id == "trace-fri"
    assert ticket.due == TUESDAY_OPEN
    first = (await runtime.desk.tickets.interactions(ref))[0]  # type: ignore[attr-defined]
    assert first.kind == "voicemail" and first.text.startswith("llamo por la ayuda")
    audio = await client.get(first.data["recording"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert len(audio.content) == 44 + 2 * 8000 * 2
    listed = (await client.get("/api/v1/callbacks")).json()
    assert [c["id"] for c in listed] == [cb.id] and listed[0]["overdue"] is False


async def test_callbacks_in_due_order_with_retries_and_overdue_flag(runtime: Runtime, clock: FixedClock) -> None:
    clock.set(FRIDAY_EVE)
    svc = runtime.callbacks
    late = await svc.create(phone="600000002", ticket_ref=None, priority=5)
    early = await svc.create(phone="600000001", ticket_ref=None, priority=1)
    assert late.due_at == early.due_at == TUESDAY_OPEN
    assert await svc.claim_next("ana") is None  # nothing due before Tuesday
    clock.set(datetime(2026, 10, 13, 9, 0, tzinfo=MADRID))
    first = await svc.claim_next("ana")
    assert first is not None and first.id == early.id and first.status == "in_progress"
    with pytest.raises(Conflict):
        await svc.claim(early.id, "bea")  # one agent per callback
    retried = await svc.record_attempt(early.id, "no_answer", "ana")
    assert retried.status == "pending" and retried.due_at == datetime(2026, 10, 13, 10, 0, tzinfo=MADRID)
    clock.set(datetime(2026, 10, 13, 14, 0, tzinfo=MADRID))  # 14:00 + 60 min falls in the lunch gap
    await svc.claim(early.id, "ana")
    again = await svc.record_attempt(early.id, "busy", "ana")
    assert again.due_at == datetime(2026, 10, 13, 16, 0, tzinfo=MADRID)
    await svc.claim(early.id, "ana")
    failed = await svc.record_attempt(early.id, "no_answer", "ana")
    assert failed.status == "failed" and len(failed.attempts) == 3
    other = await svc.get(late.id)
    assert other.overdue  # due 08:30, not done by 14:00
    done = await svc.record_attempt(late.id, "reached", "bea")
    assert done.status == "done" and not done.overdue


async def test_recover_files_an_interrupted_message_as_incomplete(runtime: Runtime, clock: FixedClock) -> None:
    clock.set(FRIDAY_EVE)
    vm = runtime.voicemail
    writer = await vm.begin("call-cut", caller="+34600333444", trace_id="trace-cut", queue="N1")
    for _ in range(60):
        writer.write(b"\x10\x00" * 160)
    writer.abort()  # what a crash leaves: a .part file and a "recording" note in Redis
    refs = await vm.recover()
    assert len(refs) == 1
    ticket = await runtime.desk.tickets.get(refs[0])  # type: ignore[attr-defined]
    assert ticket.meta["incomplete"] is True and "incompleto" in ticket.subject
    assert (runtime.data_dir / "voicemail" / "call-cut.wav").is_file()
    assert await vm.recover() == []


async def test_overflow_callback_keeps_the_queue_position(runtime: Runtime, clock: FixedClock) -> None:
    clock.set(datetime(2026, 11, 23, 14, 27, tzinfo=MADRID))  # three minutes before the line closes

    assert await runtime.agent_queue._closing_soon()  # a waiting caller is offered a callback now
    clock.set(datetime(2026, 11, 23, 10, 0, tzinfo=MADRID))
    assert not await runtime.agent_queue._closing_soon()
    vm = runtime.voicemail
    rec = voicemail_message(runtime.data_dir, "call-over").finish()
    _, cb = await vm.complete(rec, caller="+34600555666", trace_id=None, queue="N1", transcript="x", priority=3)
    assert cb.reason == "overflow" and cb.priority == 3 and cb.due_at == clock.now()  # open now: due at once
