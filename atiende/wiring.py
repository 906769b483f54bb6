"""Adapters that let the IVR and voicemail hand work to the desk through the protocols they define
(`ivr.hooks.TicketHook`, `ivr.ports.AgentDesk`, `voicemail.service.VoicemailDesk`,
`voicemail.callback_calls.CallbackCallDesk`).

They live in the composition root because they are the one place that knows both sides: the IVR and
voicemail never import the desk, and the desk never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from config.agents import SoftphoneConfig
from core.errors import InvalidInput, NotFound
from desk import Desk
from desk.models import Agent, Interaction
from ivr.contact import Session
from ivr.ports import OfferedAgent

ACTOR = "ivr"


def phone_uri(agent: Agent, softphone: SoftphoneConfig) -> str | None:
    """Where an agent's calls ring: the desk's softphone (registered at Kamailio) or their own SIP phone."""
    if agent.phone == "browser":
        return f"sip:{agent.id}@{softphone.domain}" if softphone.enabled else None
    return agent.sip_uri


class DeskTickets:
    """The IVR's ticket hook: tickets in the desk, the citizen found by caller ID or chat id."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    async def create(self, session: Session, *, queue: str, kind: str, subject: str, body: str,
                     due: datetime | None = None, data: dict[str, Any] | None = None) -> str:
        citizen_id = None
        if session.caller:
            kind_of = "phone" if session.channel == "voice" else "webchat"
            citizen = await self.desk.citizens.identify(kind_of, session.caller)
            citizen_id = citizen.id
        channel = "phone" if session.channel == "voice" else "webchat"
        # The contact's id on the ticket and its first interaction: the desk links the call (its record, its
        # recordings) from there.
        first = None
        if body.strip():
            first = Interaction(kind="call" if channel == "phone" else "chat", channel=channel, actor="citizen",
                                direction="in", text=body[:20000],
                                data={**(data or {}), "call_id" if channel == "phone" else "contact_id": session.call_id})
        ticket = await self.desk.tickets.create(channel=channel, queue=queue, subject=subject, kind=kind,
                                                citizen_id=citizen_id, intent=session.intent,
                                                trace_id=session.trace_id, body=body, due=due, actor=ACTOR,
                                                meta={"call_id": session.call_id} if channel == "phone" else None,
                                                first=first)
        return str(ticket.ref)

    async def latest_open(self, caller: str) -> str | None:
        try:
            citizen = await self.desk.citizens.find("phone", caller)
        except InvalidInput:
            return None
        if citizen is None:
            return None
        for ref in await self.desk.citizens.tickets(citizen.id, limit=10):
            ticket = await self.desk.tickets.find(ref)
            if ticket is not None and ticket.status not in ("closed", "resolved"):
                return str(ticket.ref)
        return None

    async def status_text(self, ref: str, spoken: bool = False) -> str | None:
        try:
            return str(await self.desk.tickets.status_text(ref, spoken=spoken))
        except NotFound:
            return None


class DeskAgents:
    """The call distribution's view of the desk: agent reservation, presence and live events."""

    def __init__(self, desk: Desk, softphone: Callable[[], SoftphoneConfig]) -> None:
        self.desk = desk
        self._softphone = softphone

    async def reserve(self, queue: str, *, item: str) -> OfferedAgent | None:
        agent = await self.desk.assign.reserve(queue, item=item, kind="call", actor=ACTOR)
        if agent is None:
            return None
        return OfferedAgent(id=agent.id, sip_uri=phone_uri(agent, self._softphone()))

    async def set_away(self, agent_id: str) -> None:
        await self.desk.agents.set_presence(agent_id, "away", actor=ACTOR)

    async def hold(self, agent_id: str, item: str) -> None:
        await self.desk.agents.set_presence(agent_id, "busy", actor=ACTOR, current=item, only_from=("available", None))

    async def unhold(self, agent_id: str, item: str) -> None:
        await self.desk.agents.set_presence(agent_id, "available", actor=ACTOR, only_from=("busy", item))

    async def publish(self, event: dict[str, Any]) -> None:
        await self.desk.events.publish(event)

    async def note_call(self, ref: str, *, call_id: str, agent: str, recordings: list[str]) -> None:
        await self.desk.tickets.add_interaction(ref, Interaction(
            kind="call", channel="phone", actor=f"agent:{agent}", direction="internal",
            text="Llamada atendida por un agente.",
            data={"call_id": call_id, "agent": agent, "recordings": recordings}))


class DeskVoicemail:
    """Voicemail's view of the desk: a voicemail ticket per message, status for callbacks, attempts noted."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    async def file_voicemail(self, *, caller: str, queue: str, subject: str, transcript: str, due: datetime,
                             trace_id: str | None, data: dict[str, Any], meta: dict[str, Any]) -> tuple[str, bool]:
        citizen_id = None
        if caller:
            try:
                citizen_id = (await self.desk.citizens.identify("phone", caller)).id
            except InvalidInput:  # withheld or anonymous number: a ticket without a citizen, and no callback
                caller = ""
        first = Interaction(kind="voicemail", channel="phone", actor="citizen", direction="in", text=transcript,
                            data=data)
        ticket = await self.desk.tickets.create(channel="phone", queue=queue,
                                                subject=subject + (f" de {caller}" if caller else ""),
                                                kind="voicemail", citizen_id=citizen_id, trace_id=trace_id,
                                                body=transcript, due=due, actor=ACTOR, first=first, meta=meta)
        return str(ticket.ref), bool(caller)

    async def status_text(self, ref: str, spoken: bool = False) -> str | None:
        try:
            return str(await self.desk.tickets.status_text(ref, spoken=spoken))
        except NotFound:
            return None

    async def note_callback_attempt(self, ref: str, callback_id: str, outcome: str, note: str) -> None:
        await self.desk.tickets.add_interaction(
            ref, Interaction(kind="callback_attempt", channel="phone", actor="system", direction="out",
                             text=f"Llamada de vuelta: {outcome}",
                             data={"callback": callback_id, "outcome": outcome, "note": note}))


class DeskCallbackCalls:
    """An agent's call to a callback's citizen as the desk sees it: their phone, their presence, the ticket."""

    def __init__(self, desk: Desk, softphone: Callable[[], SoftphoneConfig]) -> None:
        self.desk = desk
        self._softphone = softphone

    async def phone_of(self, agent_id: str) -> str | None:
        return phone_uri(await self.desk.agents.get(agent_id), self._softphone())

    async def hold(self, agent_id: str, item: str) -> str | None:
        agent = await self.desk.agents.get(agent_id)
        if agent.presence == "busy":
            return None
        # Only from the state just read: an offer or a presence change meanwhile wins, and this call is refused.
        now = await self.desk.agents.set_presence(agent_id, "busy", actor=ACTOR, current=item,
                                                  only_from=(agent.presence, agent.current))
        return agent.presence if now.presence == "busy" and now.current == item else None

    async def release(self, agent_id: str, item: str, presence: str) -> None:
        await self.desk.agents.set_presence(agent_id, presence, actor=ACTOR, only_from=("busy", item))

    async def publish(self, event: dict[str, Any]) -> None:
        await self.desk.events.publish(event)

    async def note_callback_call(self, ref: str, *, callback_id: str, outcome: str, note: str, agent: str,
                                 call_id: str) -> None:
        await self.desk.tickets.add_interaction(
            ref, Interaction(kind="callback_attempt", channel="phone", actor=f"agent:{agent}", direction="out",
                             text=f"Llamada de vuelta desde el escritorio: {outcome}",
                             data={"callback": callback_id, "outcome": outcome, "note": note, "agent": agent,
                                   "call_id": call_id}))
