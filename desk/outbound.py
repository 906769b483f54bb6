"""Where agents' replies go: each digital channel registers a sender for its channel name.

    from desk.outbound import register_sender
    async def send_telegram(rt: Runtime, ticket: Ticket, message: Interaction) -> dict | None: ...
    register_sender("telegram", send_telegram)      # at import time of the channel's module

`TicketService.reply()` stores the outbound interaction first (so nothing an agent writes is lost), then calls
the sender; the sender's return value (e.g. the provider's message id) and any error end up in the reply result.
Channels without a sender (phone, office) just keep the reply on the ticket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atiende.runtime import Runtime
    from desk.models import Interaction, Ticket

Sender = Callable[["Runtime", "Ticket", "Interaction"], Awaitable[dict[str, Any] | None]]

SENDERS: dict[str, Sender] = {}


def register_sender(channel: str, sender: Sender) -> None:
    SENDERS[channel] = sender
