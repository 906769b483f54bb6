"""Replies to a ticket on the channel it came from (the agent desk's "reply" button)."""

from __future__ import annotations

from typing import Any

from atiende.errors import Conflict, NotFound
from atiende.runtime import Runtime
from desk_api.channels import deskport
from desk_api.channels.base import Contact


async def contact_for(rt: Runtime, ref: str) -> Contact | None:
    raw = await rt.store.redis.get(rt.store.keys.ticket_contact(ref))
    return Contact.model_validate_json(raw) if raw else None


async def send(rt: Runtime, contact: Contact, text: str, ref: str | None = None) -> dict[str, Any]:
    """Deliver one message; returns provider data (message ids) to keep on the interaction."""
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


async def deliver(rt: Runtime, ref: str, text: str, actor: str) -> dict[str, Any]:
    """Send `text` to the ticket's citizen on its channel and record it on the ticket."""
    ticket = await deskport.find_ticket(rt, ref)
    if ticket is None:
        raise NotFound(f"no ticket {ref}", {"ref": ref})
    contact = await contact_for(rt, ticket.ref)
    if contact is None:
        raise Conflict(
            f"ticket {ticket.display_ref} came by {ticket.channel}: there is no written channel to reply on",
            {"ref": ticket.ref, "channel": ticket.channel},
            error_id="no-reply-channel",
        )
    data = await send(rt, contact, text, ticket.ref)
    await deskport.add_message(rt, ticket.ref, channel=contact.channel, direction="out", actor=actor, text=text, data=data)
    return {"ref": ticket.ref, "channel": contact.channel, "delivered": True, "data": data}
