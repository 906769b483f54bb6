"""Assignment: who takes the next call or ticket. Every take is atomic in Redis.

    agent = await desk.assign.reserve("N1", item="call:abc", kind="call")  # longest-idle available agent with the
                                                                            # queue's skill, atomically made busy; None
                                                                            # when nobody is free. Dial agent.sip_uri.
    await desk.assign.release(agent.id)                                     # back to available (idle since now)
    agent = await desk.assign.offer("N1", ref)    # a ticket: reserve an agent and assign the ticket to them
    t = await desk.assign.claim_next("ana")       # an agent pulls the oldest waiting ticket of their queues

`reserve` is one Lua script: read the head of the skill's idle set and remove that agent from every idle set of
its skills, so two workers can never reserve the same agent. `claim_next` walks the queue's waiting set oldest
first and claims (a WATCH transaction: one winner per ticket); nothing is popped, so a crash cannot lose a
waiting ticket.
"""

from __future__ import annotations

from config.desk import DeskConfig
from core.errors import AtiendeError, InvalidInput
from core.store import Store
from desk.agents import AgentService
from desk.events import EventBus
from desk.models import Agent, Ticket
from desk.tickets import TicketService

_RESERVE = """
local ids = redis.call('ZRANGE', KEYS[1], 0, 0)
if #ids == 0 then return false end
local id = ids[1]
local raw = redis.call('GET', ARGV[1] .. id)
redis.call('ZREM', KEYS[1], id)
if raw then
  local doc = cjson.decode(raw)
  if type(doc['skills']) == 'table' then
    for _, s in ipairs(doc['skills']) do redis.call('ZREM', ARGV[2] .. s, id) end
  end
end
return id
"""


class Assignment:
    def __init__(self, store: Store, cfg: DeskConfig, agents: AgentService, tickets: TicketService,
                 events: EventBus) -> None:
        self.store = store
        self.cfg = cfg
        self.agents = agents
        self.tickets = tickets
        self.events = events
        self._reserve = store.redis.register_script(_RESERVE)

    def skill_of(self, queue: str) -> str:
        q = self.cfg.queue(queue)
        if q is None:
            raise InvalidInput(f"unknown queue {queue!r}", {"queue": queue})
        return q.skills[0] if q.skills else q.id

    async def reserve(self, queue: str, *, item: str = "", kind: str = "call", actor: str = "system") -> Agent | None:
        """Atomically take the longest-idle available agent with the queue's skill and mark them busy with `item`."""
        k = self.store.keys
        agent_id = await self._reserve(keys=[k.agents_idle(self.skill_of(queue))], args=[k.agent(""), k.agents_idle("")])
        if not agent_id:
            return None
        agent = await self.agents.set_presence(str(agent_id), "busy", actor=actor, current=item or None)
        await self.events.publish({"type": f"{kind}.offered", "queue": queue, "item": item, "agent": agent.id,
                                   "sip_uri": agent.sip_uri})
        return agent

    async def release(self, agent_id: str, *, actor: str = "system") -> Agent:
        return await self.agents.set_presence(agent_id, "available", actor=actor)

    async def offer(self, queue: str, ref: str, *, actor: str = "system") -> Agent | None:
        """Give a waiting ticket to the longest-idle agent of its queue; None when nobody is free (it stays queued)."""
        agent = await self.reserve(queue, item=ref, kind="ticket", actor=actor)
        if agent is None:
            return None
        try:
            await self.tickets.claim(ref, agent.id, actor=actor)
        except AtiendeError:
            await self.release(agent.id, actor=actor)
            raise
        return agent

    def queues_for(self, agent: Agent) -> list[str]:
        """Queues an agent works, highest level first: those whose skills the agent has, up to the agent's level."""
        qs = [q for q in self.cfg.queues if q.level <= agent.level and (not q.skills or set(q.skills) & set(agent.skills))]
        return [q.id for q in sorted(qs, key=lambda q: -q.level)]

    async def claim_next(self, agent_id: str, *, actor: str | None = None) -> Ticket | None:
        """The oldest waiting ticket of the agent's queues, claimed for the agent; None when there is none."""
        agent = await self.agents.get(agent_id)
        k = self.store.keys
        for q in self.queues_for(agent):
            # The claim is the atomic step; losing a race just moves on to the next ticket.
            for ref in await self.store.redis.zrange(k.queue_items(q), 0, 49):
                try:
                    return await self.tickets.claim(str(ref), agent.id, actor=actor or f"agent:{agent.id}")
                except AtiendeError:
                    continue
        return None
