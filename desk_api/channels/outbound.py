"""Agents' replies on a ticket's channel: one sender per written channel, registered with the desk.

`TicketService.reply()` stores the agent's message, then calls the sender registered (by the composition root) for the
ticket's channel (desk/outbound.py); the sender finds where the conversation lives
(`Keys.ticket_contact`, written by the assistant, or the ticket's `meta["contact"]`) and delivers.
"""

from __future__ import annotations

from typing import Any

from core.errors import Conflict
from desk.models import Interaction, Ticket
from desk.outbound import Sender
from desk_api.channels.base import Contact
from desk_api.channels.flow import remember_outbound
from desk_api.context import Services

WRITTEN_CHANNELS = ("webchat", "telegram", "whatsapp", "email")


async def contact_for(rt: Services, ticket: Ticket) -> Contact | None:
    raw = await rt.store.redis.get(rt.store.keys.ticket_contact(ticket.ref))
    if raw:
        return Contact.model_validate_json(raw)
    stored = ticket.meta.get("contact")
    return Contact.model_validate(stored) if isinstance(stored, dict) else None


async def send(rt: Services, contact: Contact, text: str, ref: str | None = None,
               interaction_id: str | None = None) -> dict[str, Any]:
    """Deliver one message; returns provider data (message ids under "ids") to keep with the reply."""
    if contact.channel == "webchat":
        from desk_api.channels import webchat

        return await webchat.send_agent_reply(rt, contact.address, text, ref, interaction_id)
    if contact.channel == "telegram":
        from desk_api.channels import telegram

        return await telegram.send_message(rt, contact, text)
    if contact.channel == "whatsapp":
        from desk_api.channels import whatsapp

        return await whatsapp.send_reply(rt, contact, text, ref, interaction_id)
    from desk_api.channels import email

    return await email.send_reply(rt, contact, text, ref)


async def sender(rt: Services, ticket: Ticket, message: Interaction) -> dict[str, Any] | None:
    contact = await contact_for(rt, ticket)
    if contact is None:
        raise Conflict(f"ticket {ticket.display_ref} has no {ticket.channel} conversation to reply on",
                       {"ref": ticket.ref, "channel": ticket.channel}, error_id="no-reply-channel")
    result = await send(rt, contact, message.text, ticket.ref, message.id)
    ids = [str(i) for i in result.get("ids") or [result.get("message_id")] if i]
    if contact.channel != "webchat":  # statuses and bounces name these ids: they find this reply
        details: dict[str, Any] = {k: result[k] for k in ("template", "held") if k in result}
        await remember_outbound(rt, contact.channel, ids, ticket.ref, message.id, details)
    return result


def channel_senders(rt: Services) -> dict[str, Sender]:
    """The desk's reply senders for the written channels (the composition root registers them)."""

    async def send_reply(ticket: Ticket, message: Interaction) -> dict[str, Any] | None:
        return await sender(rt, ticket, message)

    return dict.fromkeys(WRITTEN_CHANNELS, send_reply)
