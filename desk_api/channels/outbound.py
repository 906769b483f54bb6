"""Agents' replies on a ticket's channel: one sender per written channel, registered with the desk.

`TicketService.reply()` stores the agent's message, then calls the sender registered for the
ticket's channel (desk_api/services/outbound.py); the sender finds where the conversation lives
(`Keys.ticket_contact`, written by the assistant, or the ticket's `meta["contact"]`) and delivers.
"""

from __future__ import annotations

from typing import Any

from atiende.runtime import Runtime
from core.errors import Conflict
from desk.models import Interaction, Ticket
from desk.outbound import register_sender
from desk_api.channels.base import Contact

WRITTEN_CHANNELS = ("webchat", "telegram", "whatsapp", "email")


async def contact_for(rt: Runtime, ticket: Ticket) -> Contact | None:
    raw = await rt.store.redis.get(rt.store.keys.ticket_contact(ticket.ref))
    if raw:
        return Contact.model_validate_json(raw)
    stored = ticket.meta.get("contact")
    return Contact.model_validate(stored) if isinstance(stored, dict) else None


async def send(rt: Runtime, contact: Contact, text: str, ref: str | None = None) -> dict[str, Any]:
    """Deliver one message; returns provider data (message ids) to keep with the reply."""
    if contact.channel == "webchat":
        from desk_api.channels import webchat

        return await webchat.push(rt, contact.address, {"from": "agent", "text": text, "ref": ref})
    if contact.channel == "telegram":
        from desk_api.channels import telegram

        return await telegram.send_message(rt, contact, text)
    if contact.channel == "whatsapp":
        from desk_api.channels import whatsapp

        return await whatsapp.send_text(rt, contact, text)
    from desk_api.channels import email

    return await email.send_reply(rt, contact, text, ref)


async def sender(rt: Runtime, ticket: Ticket, message: Interaction) -> dict[str, Any] | None:
    contact = await contact_for(rt, ticket)
    if contact is None:
        raise Conflict(f"ticket {ticket.display_ref} has no {ticket.channel} conversation to reply on",
                       {"ref": ticket.ref, "channel": ticket.channel}, error_id="no-reply-channel")
    return await send(rt, contact, message.text, ticket.ref)


for _channel in WRITTEN_CHANNELS:
    register_sender(_channel, sender)
