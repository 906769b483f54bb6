"""A waiting caller hears their position and how long the wait will be, from how fast the queue has been
answered lately; "más de N minutos" when the recent answers are too few to tell; a wait far too long offers a
callback at once instead."""

from __future__ import annotations

from datetime import timedelta

import pytest

from atiende.runtime import Runtime
from core.clock import FixedClock
from ivr import speak
from ivr.textio import ScriptedIO

pytestmark = pytest.mark.anyio


def test_waiting_text() -> None:
    assert speak.waiting_text(1, None, True) == "Es usted el siguiente."
    assert speak.waiting_text(3, 250, True) == ("Hay 2 personas delante de usted. El tiempo de espera estimado es de "
                                                "unos 4 minutos.")
    assert speak.waiting_text(2, 30, False).endswith("será de más de 1 minuto.")


async def _answered(rt: Runtime, clock: FixedClock, queue: str, n: int, every_s: float) -> None:
    r, key = rt.store.redis, rt.store.keys.queue_answers(queue)
    now = clock.now().timestamp()
    await r.zadd(key, {f"past-{i}": now - i * every_s for i in range(n)})


async def test_estimate_from_the_recent_answer_rate(runtime: Runtime, clock: FixedClock) -> None:
    q = runtime.agent_queue
    assert await q.estimate("N1", 3) == (None, False)  # nothing answered lately: unknown, nothing is promised
    await _answered(runtime, clock, "N1", 2, 60)
    wait, sure = await q.estimate("N1", 3)
    assert not sure and wait == pytest.approx(3 / (2 / 1800))  # two answers in 30 min: a lower bound
    await _answered(runtime, clock, "N1", 12, 120)  # one answer every two minutes
    wait, sure = await q.estimate("N1", 2)
    assert sure and wait == pytest.approx(2 / (12 / 1800))
    clock.set(clock.now() + timedelta(hours=2))
    assert await q.estimate("N1", 2) == (None, False)  # the old answers left the window


async def test_the_caller_hears_the_estimate_and_a_long_wait_offers_a_callback(runtime: Runtime, clock: FixedClock) -> None:
    await _answered(runtime, clock, "N1", 6, 300)  # one answer every five minutes
    io = ScriptedIO([("say", "quiero hablar con una persona"), ("say", "no")], clock=clock)
    session = await runtime.ivr.run(io)
    said = " ".join(m.text for m in io.out)
    assert "Es usted el siguiente. El tiempo de espera estimado es de unos 5 minutos." in said, said
    assert session.vars["estimated_wait_s"] == 300

    await runtime.store.redis.delete(runtime.store.keys.queue_answers("N1"))
    await _answered(runtime, clock, "N1", 3, 600)  # one every ten minutes, and two people ahead
    for i in range(2):
        await runtime.store.redis.zadd(runtime.store.keys.calls_waiting("N1"), {f"call:ahead-{i}": 0})
    io = ScriptedIO([("say", "quiero hablar con una persona"), ("say", "no")], clock=clock)
    session = await runtime.ivr.run(io)
    said = " ".join(m.text for m in io.out)
    assert "unos 30 minutos" in said and "buzón de voz" in said, said  # offered a message and a callback at once
    assert session.vars.get("overflow_reason") == "estimated_wait"


async def test_post_contact_survey_after_a_self_service_answer(runtime: Runtime, clock: FixedClock,
                                                               tmp_path: object) -> None:
    _, doc = await runtime.ivr.current_flows()
    data = doc.model_dump(mode="json", exclude_none=True)
    data["survey"] = {"enabled": True}
    await runtime.flows.put(data, actor="user:admin")
    io = ScriptedIO([("say", "quiero pagar la tasa de la itv"), ("say", "no"), ("dtmf", "4")], clock=clock)
    session = await runtime.ivr.run(io)
    said = [m.text for m in io.out]
    assert any("del 1 al 5" in t for t in said) and said[-1] == "Gracias por su valoración.", said
    assert session.survey == 4 and (await runtime.calls.get(session.call_id)).survey == 4
    # off by default: nobody is asked
    io = ScriptedIO([("say", "quiero pagar la tasa de la itv"), ("say", "no")], clock=clock)
    await runtime.flows.put(doc.model_dump(mode="json", exclude_none=True), actor="user:admin")
    session = await runtime.ivr.run(io)
    assert session.survey is None and not any("del 1 al 5" in m.text for m in io.out)


async def test_survey_report(runtime: Runtime, clock: FixedClock, client: object) -> None:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    _, doc = await runtime.ivr.current_flows()
    data = doc.model_dump(mode="json", exclude_none=True)
    data["survey"] = {"enabled": True}
    await runtime.flows.put(data, actor="user:admin")
    for score in ("5", "3"):
        await runtime.ivr.run(ScriptedIO([("say", "quiero pagar la tasa de la itv"), ("say", "no"), ("dtmf", score)],
                                         clock=clock))
    report = (await client.get("/api/v1/calls/surveys")).json()
    assert report["self_service"]["answers"] == 2 and report["self_service"]["average"] == 4.0
