"""The channels' only door to the desk services (`runtime.desk`), so a change there touches one file here."""

from __future__ import annotations

from typing import Any

from core.errors import RateLimited
from desk import Desk
from desk.models import ACTIVE_STATUSES, Interaction, Ticket
from desk_api.context import Services


def _desk(rt: Services) -> Desk:
    return rt.desk


async def identify(rt: Services, kind: str, value: str, name: str | None) -> str:
    citizen = await _desk(rt).citizens.identify(kind, value, name=name)
    return str(citizen.id)


async def create_ticket(
    rt: Services, *, channel: str, queue: str, subject: str, kind: str, citizen_id: str, intent: str | None,
    trace_id: str, body: str, data: dict[str, Any], meta: dict[str, Any],
) -> Ticket:
    """A ticket whose first interaction is the citizen's message (the assistant is the ticket's creator)."""
    first = _message(channel=channel, direction="in", actor="citizen", text=body, data=data)
    ticket: Ticket = await _desk(rt).tickets.create(
        channel=channel, queue=queue, subject=subject, kind=kind, citizen_id=citizen_id, intent=intent,
        trace_id=trace_id, body=body, actor="assistant", meta=meta, first=first,
    )
    return ticket


async def bind_thread(rt: Services, channel: str, thread_id: str, ref: str) -> None:
    await _desk(rt).tickets.bind_thread(channel, thread_id, ref)


async def by_thread(rt: Services, channel: str, thread_id: str) -> Ticket | None:
    ticket: Ticket | None = await _desk(rt).tickets.by_thread(channel, thread_id)
    return ticket


async def find_ticket(rt: Services, ref: str) -> Ticket | None:
    ticket: Ticket | None = await _desk(rt).tickets.find(ref)
    return ticket


def is_active(ticket: Ticket) -> bool:
    return ticket.status in ACTIVE_STATUSES


async def status_text(rt: Services, ref: str) -> str:
    return str(await _desk(rt).tickets.status_text(ref))


async def add_message(
    rt: Services, ref: str, *, channel: str, direction: str, actor: str, text: str, data: dict[str, Any] | None = None
) -> Interaction:
    it: Interaction = await _desk(rt).tickets.add_interaction(
        ref, _message(channel=channel, direction=direction, actor=actor, text=text, data=data or {}))
    return it


async def set_delivery(rt: Services, ref: str, interaction_id: str, status: str, *, reason: str | None = None,
                       details: dict[str, Any] | None = None, restart: bool = False) -> bool:
    """A provider's delivery status on one of our messages (sent, delivered, read, failed); `restart` when the
    message went out anew (a held reply released): its status starts over."""
    return bool(await _desk(rt).tickets.set_delivery(ref, interaction_id, status, reason=reason, details=details,
                                                     restart=restart))


def _message(*, channel: str, direction: str, actor: str, text: str, data: dict[str, Any]) -> Interaction:
    kind = "email" if channel == "email" else "chat"
    return Interaction.model_validate({"kind": kind, "channel": channel, "direction": direction, "actor": actor,
                                       "text": text, "data": data})


async def record_contact(rt: Services, channel: str, *, contained: bool) -> None:
    """One written contact finished; contained = the assistant resolved it without a person (containment report)."""
    await _desk(rt).reports.record_contact(channel, contained=contained)


async def rate_hit(rt: Services, bucket: str, limit: int, window_s: int) -> None:
    """Fixed-window limit for citizen-facing input (one INCR per message)."""
    key = rt.store.keys.rate(f"chan:{bucket}")
    async with rt.store.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_s, nx=True)
        count, _ = await pipe.execute()
    if int(count) > limit:
        raise RateLimited("too many messages, wait a moment", {"limit": limit, "window_s": window_s})



async def address_hit(rt: Services, rule: str, address: str) -> None:
    """The desk's per-client-address limit `rule` (desk.rate_limits), the one the HTTP endpoints use."""
    await _desk(rt).limiter.check(rule, address)
