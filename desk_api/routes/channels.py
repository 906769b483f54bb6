"""Channel webhooks (Telegram, WhatsApp, e-mail), the web chat socket and widget, and agents' replies on a ticket's channel."""

from __future__ import annotations

from fastapi import APIRouter

from desk_api.channels import email, telegram, webchat, whatsapp

router = APIRouter()
for _module in (webchat, telegram, whatsapp, email):
    router.include_router(_module.router)
