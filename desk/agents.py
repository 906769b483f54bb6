"""Agents and their presence.

    await desk.agents.upsert(Agent(id="ana", name="Ana", level=1, skills=["general"], sip_uri="sip:ana@..."))
    a = await desk.agents.set_presence("ana", "available", actor="user:ana")   # enters the idle sets of its skills
    a = await desk.agents.get("ana"); agents = await desk.agents.all()

An available agent sits in one sorted set per skill (`Keys.agents_idle(skill)`, score = idle since), so "the
longest-idle available agent with skill X" is the first member; see assignment.py for the atomic take.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import WatchError

from core.clock import Clock
from core.errors import InvalidInput, NotFound, Unavailable
from core.store import Store
from desk.audit import AuditLog
from desk.events import EventBus, encode
from desk.models import Agent

PRESENCES = ("available", "busy", "away", "offline")


class AgentService:
    def __init__(self, store: Store, clock: Clock, events: EventBus, audit: AuditLog) -> None:
        self.store = store
        self.clock = clock
        self.events = events
        self.audit = audit

    async def upsert(self, agent: Agent, actor: str = "system") -> Agent:
        k = self.store.keys
        old = await self.store.get_model(k.agent(agent.id), Agent)
        if old is not None:  # presence is the agent's own business, not the admin's
            agent.presence, agent.idle_since, agent.current = old.presence, old.idle_since, old.current
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.agent(agent.id), agent.model_dump_json())
            pipe.sadd(k.agents, agent.id)
            for skill in set(old.skills if old else []) - set(agent.skills):
                pipe.zrem(k.agents_idle(skill), agent.id)
            if agent.presence == "available" and agent.current is None:
                for skill in agent.skills:
                    pipe.zadd(k.agents_idle(skill), {agent.id: (agent.idle_since or self.clock.now()).timestamp()}, nx=True)
            pipe.xadd(k.audit, self.audit.entry(actor, "agent.upsert", agent.id,  # type: ignore[arg-type]
                                                agent.model_dump(mode="json", include={"name", "level", "skills", "sip_uri"})))
            await pipe.execute()
        return agent

    async def get(self, agent_id: str) -> Agent:
        a = await self.store.get_model(self.store.keys.agent(agent_id), Agent)
        if a is None:
            raise NotFound(f"no agent {agent_id!r}", {"agent_id": agent_id})
        return a

    async def find(self, agent_id: str) -> Agent | None:
        return await self.store.get_model(self.store.keys.agent(agent_id), Agent)

    async def all(self) -> list[Agent]:
        ids = sorted(str(i) for i in await self.store.redis.smembers(self.store.keys.agents))
        raws = await self.store.redis.mget([self.store.keys.agent(i) for i in ids]) if ids else []
        return [Agent.model_validate_json(r) for r in raws if r]

    async def delete(self, agent_id: str, actor: str) -> None:
        a = await self.get(agent_id)
        k = self.store.keys
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for skill in a.skills:
                pipe.zrem(k.agents_idle(skill), a.id)
            pipe.delete(k.agent(a.id))
            pipe.srem(k.agents, a.id)
            pipe.xadd(k.audit, self.audit.entry(actor, "agent.delete", a.id))  # type: ignore[arg-type]
            await pipe.execute()

    async def set_presence(self, agent_id: str, presence: str, *, actor: str, current: str | None = None,
                           only_from: tuple[str, str | None] | None = None) -> Agent:
        """available: enters the idle sets (idle since now); busy/away/offline: leaves them. With `only_from`
        (presence, current) the change happens only if the agent is in exactly that state, atomically; otherwise
        the agent is returned unchanged (a conditional hold cannot undo an offer or a presence set meanwhile)."""
        if presence not in PRESENCES:
            raise InvalidInput(f"unknown presence {presence!r}", {"presences": list(PRESENCES)})
        k = self.store.keys
        key = k.agent(agent_id)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for _ in range(50):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(f"no agent {agent_id!r}", {"agent_id": agent_id})
                    a = Agent.model_validate_json(raw)
                    if only_from is not None and (a.presence, a.current) != only_from:
                        await pipe.unwatch()
                        return a
                    now = self.clock.now()
                    was = a.presence
                    a.presence = presence  # type: ignore[assignment]
                    if presence == "available":
                        a.current = None
                        if was != "available":
                            a.idle_since = now
                    else:
                        a.idle_since = None
                        a.current = current if presence == "busy" else None
                    pipe.multi()
                    pipe.set(key, a.model_dump_json())
                    for skill in a.skills:
                        if presence == "available":
                            pipe.zadd(k.agents_idle(skill), {a.id: (a.idle_since or now).timestamp()}, nx=True)
                        else:
                            pipe.zrem(k.agents_idle(skill), a.id)
                    ev = {"type": "agent.presence", "agent": a.id, "presence": presence, "was": was, "current": a.current,
                          "actor": actor}
                    pipe.xadd(k.events, encode(self.events.stamp(ev)), maxlen=self.events.maxlen, approximate=True)  # type: ignore[arg-type]
                    pipe.xadd(k.audit, self.audit.entry(actor, "agent.presence", a.id, {"presence": presence}))  # type: ignore[arg-type]
                    await pipe.execute()
                    return a
                except WatchError:
                    continue
        raise Unavailable("agent is being changed by others, try again")

    async def idle(self, skill: str) -> list[tuple[str, float]]:
        """Available agents with the skill, longest idle first: [(agent id, idle since timestamp)]."""
        members: Any = await self.store.redis.zrange(self.store.keys.agents_idle(skill), 0, -1, withscores=True)
        return [(str(m), float(s)) for m, s in members]
