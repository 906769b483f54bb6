"""Which tickets and citizens a principal may see or change: the rules every route applies (agents their queues
and their own tickets, supervisors everything), kept in one place so no route drifts from the others."""

from __future__ import annotations

from core.errors import Forbidden
from desk import Desk
from desk.models import Interaction, Principal, Ticket


def may_work(p: Principal, t: Ticket) -> None:
    """Agents act on tickets assigned to them; supervisors (and machines with that role) on any."""
    if p.has("supervisor"):
        return
    if p.agent_id is None or t.assignee != p.agent_id:
        raise Forbidden("this ticket is not assigned to you; claim it first", {"ref": t.ref, "assignee": t.assignee},
                        error_id="not-assignee")


def visible(scope: frozenset[str] | None, p: Principal, t: Ticket) -> bool:
    return scope is None or t.queue in scope or (p.agent_id is not None and t.assignee == p.agent_id)


async def may_see(desk: Desk, p: Principal, t: Ticket, interactions: list[Interaction] | None = None) -> None:
    """Agents see the tickets of their queues, those assigned to them, and those they escalated (to follow them
    up; read only: changing one needs it assigned)."""
    if visible(await desk.queues_visible_to(p), p, t):
        return
    items = interactions if interactions is not None else await desk.tickets.interactions(t.ref)
    if not any(i.kind == "escalation" and i.actor == p.id for i in items):
        raise Forbidden("this ticket is in a queue you do not work", {"ref": t.ref, "queue": t.queue},
                        error_id="not-your-queue")


async def may_see_citizen(desk: Desk, p: Principal, citizen_id: str) -> None:
    scope = await desk.queues_visible_to(p)
    if scope is None:
        return
    tickets = await desk.tickets.get_many(await desk.citizens.tickets(citizen_id, limit=500))
    if not any(visible(scope, p, t) for t in tickets):
        raise Forbidden("this citizen has no ticket in your queues", {"citizen_id": citizen_id},
                        error_id="not-your-queue")
