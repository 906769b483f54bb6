"""Where agents' replies go: the HTTP layer's channels register a sender per channel name with the desk.

    desk.register_sender("telegram", send_telegram)   # async (ticket, message) -> provider data | None

`TicketService.reply()` stores the outbound interaction first (so nothing an agent writes is lost), then calls
the sender; the sender's return value (e.g. the provider's message id) and any error end up in the reply result.
Channels without a sender (phone, office) just keep the reply on the ticket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from desk.models import Interaction, Ticket

Sender = Callable[[Ticket, Interaction], Awaitable[dict[str, Any] | None]]
