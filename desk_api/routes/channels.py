"""Channel webhooks (Telegram, WhatsApp, e-mail) and the web chat socket and widget.

Importing `desk_api.channels.outbound` registers the senders that deliver agents' replies on each channel."""

from __future__ import annotations

from fastapi import APIRouter

from desk_api.channels import email, outbound, telegram, webchat, whatsapp

router = APIRouter()
SENDERS = outbound.WRITTEN_CHANNELS
for _module in (webchat, telegram, whatsapp, email):
    router.include_router(_module.router)
