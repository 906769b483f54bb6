"""Desk services against a real Redis: citizens, tickets, status text, claims, escalation, agents, reports."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date

import pytest

from atiende.runtime import Runtime
from core.errors import Conflict, InvalidInput, NotFound
from core.refs import REF_ALPHABET, normalize_ref
from desk.models import Interaction

pytestmark = pytest.mark.anyio


async def test_citizen_identify_is_get_or_create_and_normalises(runtime: Runtime) -> None:
    desk = runtime.desk
    results = await asyncio.gather(*(desk.citizens.identify("phone", v) for v in
                                     ["600 12 34 56", "+34600123456", "0034 600-123-456", "sip:600123456@pbx"] * 5))
    assert len({c.id for c in results}) == 1
    assert results[0].identity("phone") == "+34600123456"
    with pytest.raises(InvalidInput):
        await desk.citizens.identify("phone", "abc")
    with pytest.raises(InvalidInput):
        await desk.citizens.identify("fax", "1")


async def test_citizen_link_merges_two_people_into_one(runtime: Runtime) -> None:
    desk = runtime.desk
    a = await desk.citizens.identify("phone", "600123456", name="Marta")
    b = await desk.citizens.identify("email", "Marta@Example.org")
    t = await desk.tickets.create(channel="email", queue="N1", subject="Beca", citizen_id=b.id)
    merged = await desk.citizens.link(a.id, "email", "marta@example.org", actor="user:ana")
    assert merged.id == a.id
    assert {i.kind for i in merged.identities} == {"phone", "email"}
    assert (await desk.citizens.get(b.id)).id == a.id  # the merged id follows to the survivor
    assert (await desk.citizens.find("email", "MARTA@example.org")).id == a.id  # type: ignore[union-attr]
    assert t.ref in await desk.citizens.tickets(a.id)


async def test_ticket_create_get_and_status_text(runtime: Runtime) -> None:
    desk = runtime.desk
    t = await desk.tickets.create(channel="voice", queue="N1", subject="Tasa ITV", intent="tasa_itv", body="quiero pagar",
                                  trace_id="tr-1")
    assert len(t.ref) == 6 and all(c in REF_ALPHABET for c in t.ref)
    assert t.channel == "phone" and t.status == "open" and t.due is not None and t.due > t.created_at
    got = await desk.tickets.get(t.display_ref.lower())
    assert got.ref == t.ref
    assert normalize_ref(" k7m 4px ") == "K7M4PX" and normalize_ref("K7M40X") is None
    text = await desk.tickets.status_text(t.ref)
    assert text.startswith(f"Su consulta con referencia {t.display_ref}") and "pendiente" in text
    spoken = await desk.tickets.status_text(t.ref, spoken=True)
    assert ", ".join(t.ref[:3]) in spoken
    its = await desk.tickets.interactions(t.ref)
    assert [i.kind for i in its] == ["call"] and its[0].text == "quiero pagar"
    with pytest.raises(NotFound):
        await desk.tickets.get("ZZZ-ZZZ")
    with pytest.raises(InvalidInput):
        await desk.tickets.create(channel="email", queue="N9", subject="x")


async def test_a_retried_create_whose_first_run_landed_opens_one_ticket(runtime: Runtime) -> None:
    """redis-py retries a command whose reply was lost with the connection: the script then runs twice."""
    tickets = runtime.desk.tickets
    script = tickets._create

    async def lost_reply_then_retried(*, keys: list[str], args: list[object]) -> object:
        await script(keys=keys, args=args)  # ran on the server; its reply never came back
        return await script(keys=keys, args=args)  # the retry finds the reference taken

    tickets._create = lost_reply_then_retried  # type: ignore[assignment]
    ticket = await tickets.create(channel="phone", queue="N1", subject="Una sola", actor="ivr")
    tickets._create = script
    listed = await runtime.store.redis.zrange(runtime.store.keys.tickets_all, 0, -1)
    assert listed == [ticket.ref]
    assert (await tickets.get(ticket.ref)).subject == "Una sola"


async def test_complaint_due_in_business_days_and_goes_to_n2(runtime: Runtime) -> None:
    t = await runtime.desk.tickets.create(channel="webchat", queue=None, subject="Queja", kind="complaint")
    assert t.queue == "N2" and t.level == 2
    assert t.due is not None and (t.due - t.created_at).days >= 14  # 10 business days from a Monday


async def test_lifecycle_claim_escalate_close(runtime: Runtime) -> None:
    desk = runtime.desk
    t = await desk.tickets.create(channel="telegram", queue="N1", subject="Cita", body="hola")
    assert [x.ref for x in await desk.tickets.query(queue="N1", waiting=True)] == [t.ref]
    t = await desk.tickets.claim(t.ref, "ana")
    assert t.status == "assigned" and t.assignee == "ana"
    with pytest.raises(Conflict):
        await desk.tickets.claim(t.ref, "pepe")
    r = await desk.tickets.reply(t.ref, "Le ayudo", actor="user:ana")
    assert r.interaction.direction == "out" and r.delivery.channel == "telegram"
    with pytest.raises(InvalidInput):
        await desk.tickets.escalate(t.ref, actor="user:ana", note=" ")
    t = await desk.tickets.escalate(t.ref, actor="user:ana", note="Es una queja formal")
    assert (t.status, t.queue, t.assignee) == ("escalated", "N2", None)
    assert "especialista" in await desk.tickets.status_text(t.ref)
    assert await desk.tickets.query(queue="N1") == []
    t = await desk.tickets.claim(t.ref, "luis")
    t = await desk.tickets.close(t.ref, actor="user:luis", note="Respondida")
    assert t.status == "closed" and t.closed_at is not None
    assert "cerrada" in await desk.tickets.status_text(t.ref)
    kinds = [i.kind for i in await desk.tickets.interactions(t.ref) if i.kind != "note"]  # a note if delivery failed
    assert kinds == ["chat", "status_change", "chat", "escalation", "status_change", "status_change"]
    with pytest.raises(Conflict):
        await desk.tickets.escalate(t.ref, actor="user:luis", note="x")
    # a citizen writing again reopens it
    await desk.tickets.add_interaction(t.ref, Interaction(kind="chat", channel="telegram", actor="citizen", direction="in",
                                                          text="sigo sin respuesta"))
    assert (await desk.tickets.get(t.ref)).status == "open"
    audit = await desk.audit.entries(target=t.ref)
    assert {"ticket.create", "ticket.claim", "ticket.escalate", "ticket.closed"} <= {a["action"] for a in audit}
    events = [e["type"] for _, e in await desk.events.recent(50)]
    assert "ticket.created" in events and "ticket.escalated" in events


async def test_longest_idle_agent_gets_the_call_atomically(runtime: Runtime) -> None:
    desk = runtime.desk
    from desk.models import Agent

    for name in ("ana", "bea", "carla"):
        await desk.agents.upsert(Agent(id=name, name=name.title(), skills=["general"]))
    await desk.agents.set_presence("bea", "available", actor="t")
    runtime.clock.advance(5)  # type: ignore[attr-defined]
    await desk.agents.set_presence("ana", "available", actor="t")
    runtime.clock.advance(5)  # type: ignore[attr-defined]
    await desk.agents.set_presence("carla", "available", actor="t")
    first = await desk.assign.reserve("N1", item="call0")
    assert first is not None and first.id == "bea"  # the longest idle
    assert (await desk.agents.get("bea")).presence == "busy"
    got = await asyncio.gather(*(desk.assign.reserve("N1", item=f"call{i}") for i in range(1, 6)))
    ids = [a.id for a in got if a is not None]
    assert sorted(ids) == ["ana", "carla"]  # concurrent takers: each agent once, never twice
    await desk.assign.release("ana")
    assert (await desk.assign.reserve("N1")).id == "ana"  # type: ignore[union-attr]


async def test_claim_next_and_offer(runtime: Runtime) -> None:
    desk = runtime.desk
    from desk.models import Agent

    await desk.agents.upsert(Agent(id="luis", name="Luis", level=2, skills=["quejas", "general"]))
    t1 = await desk.tickets.create(channel="email", queue="N1", subject="uno")
    t2 = await desk.tickets.create(channel="email", queue="N2", subject="dos", kind="complaint")
    got = await desk.assign.claim_next("luis")
    assert got is not None and got.ref == t2.ref  # N2 first for an N2 agent
    await desk.agents.set_presence("luis", "available", actor="t")
    agent = await desk.assign.offer("N1", t1.ref)
    assert agent is not None and agent.id == "luis"
    assert (await desk.tickets.get(t1.ref)).assignee == "luis"


async def test_reports_summary(runtime: Runtime) -> None:
    desk = runtime.desk
    await desk.tickets.create(channel="phone", queue="N1", subject="a", body="x")
    await desk.reports.record_contact("phone", contained=True)
    await desk.reports.record_contact("phone", contained=False)
    await desk.reports.record_wait("phone", 42, abandoned=True)
    runtime.clock.advance(30 * 86400)  # type: ignore[attr-defined]
    data = await desk.reports.summary(date(2026, 11, 23), date(2026, 11, 23))
    assert data["interactions_by_channel"]["phone"] == 1
    assert data["containment"]["share"] == 0.5
    assert data["abandoned_calls"] == {"calls": 1, "abandoned": 1, "share": 1.0}
    assert data["open_past_due"]["count"] == 1
    with pytest.raises(InvalidInput):
        await desk.reports.summary(date(2026, 11, 23), date(2026, 11, 1))


async def test_rate_limit_is_shared_between_processes(runtime: Runtime) -> None:
    from core.errors import RateLimited
    from desk.auth import RateLimiter

    cfg = runtime.settings.desk  # status: 30 per 60 s
    a, b = RateLimiter(runtime.store, runtime.clock, cfg), RateLimiter(runtime.store, runtime.clock, cfg)
    for _ in range(20):
        await a.check("status", "10.0.0.1")
    await a.flush()
    await b.check("status", "10.0.0.1")
    await b.flush()  # the other worker learns the global count (21) at its next flush, within 50 ms
    passed = 0
    for _ in range(20):
        try:
            await b.check("status", "10.0.0.1")
            passed += 1
        except RateLimited:
            break
    await b.flush()
    assert passed == 9
    with contextlib.suppress(RateLimited):
        await a.check("status", "10.0.0.1")  # the first worker may let one more through before its next flush
    await a.flush()
    with pytest.raises(RateLimited):
        await a.check("status", "10.0.0.1")
    await a.check("status", "10.0.0.2")  # another client has its own window
