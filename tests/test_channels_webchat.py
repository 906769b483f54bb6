"""Web chat over a real WebSocket: a uvicorn server on 127.0.0.1, a `websockets` client, the real Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

import desk_api.channels.outbound  # noqa: F401  (registers the channel senders in this process too)
from core.redis_server import PrivateRedis
from tests._channels_support import LiveServer, make_runtime

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def live(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    server = LiveServer(lambda: make_runtime(redis_server.url, prefix, tmp_path_factory.mktemp("live"))).start()
    server.prefix = prefix  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
async def rt(live: LiveServer, redis_server: PrivateRedis, tmp_path: Path) -> AsyncIterator[Any]:
    """The test's own view of the server's data (same Redis prefix, a Store on this event loop)."""
    runtime = make_runtime(redis_server.url, live.prefix, tmp_path)  # type: ignore[attr-defined]
    yield runtime
    await runtime.store.close()


async def recv(ws: ClientConnection, kind: str = "message", within: float = 5.0) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), within))
        if frame["type"] == kind:
            return frame


async def until_from(ws: ClientConnection, sender: str) -> dict[str, Any]:
    while True:
        frame = await recv(ws)
        if frame.get("from") == sender:
            return frame


async def test_webchat_conversation(live: LiveServer, rt: Any) -> None:
    ws_url = live.url.replace("http", "ws") + "/api/v1/channels/webchat/ws"
    async with connect(ws_url) as ws:
        session = (await recv(ws, "session"))["session"]
        greeting = await recv(ws)
        assert greeting["from"] == "assistant" and "ayudarle" in greeting["text"]

        first = "Quiero hablar con una persona sobre la tarjeta sanitaria"
        await ws.send(json.dumps({"type": "message", "id": "c1", "text": first}))
        echo = await recv(ws)
        assert (echo["id"], echo["from"]) == ("c1", "citizen")
        answer = await until_from(ws, "assistant")
        ref = answer["ref"]
        assert ref and f"{ref[:3]}-{ref[3:]}" in answer["text"]
        ticket = await rt.desk.tickets.get(ref)
        assert (ticket.channel, ticket.queue) == ("webchat", "N1")
        assert (await rt.desk.citizens.get(ticket.citizen_id)).identity("webchat") == session

        # An agent replies from the desk (any node): it arrives on this socket.
        out = await rt.desk.tickets.reply(ref, "Buenos días, ¿qué le ocurre con la tarjeta?", actor="agent:ana")
        assert out.delivery.sent, out.delivery
        agent = await until_from(ws, "agent")
        assert agent["text"] == "Buenos días, ¿qué le ocurre con la tarjeta?"

        # The citizen answers: it lands on the same ticket, no automatic reply.
        await ws.send(json.dumps({"type": "message", "text": "Se me ha caducado"}))
        await recv(ws)
        for _ in range(50):
            items = await rt.desk.tickets.interactions(ref)
            if items[-1].text == "Se me ha caducado":
                break
            await asyncio.sleep(0.05)
        assert items[-1].direction == "in" and items[-1].actor == "citizen"

        await ws.send("{not json but text is fine")
        await recv(ws)  # taken as plain text: echoed
        await ws.send(json.dumps({"type": "message", "text": 42}))
        assert (await recv(ws, "error"))["message"] == "Mensaje no válido."
        await ws.send("x" * 100_000)
        assert (await recv(ws, "error"))["message"] == "El mensaje es demasiado largo."

    # Reconnecting with the session (in a first frame, never in the URL) replays the conversation.
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "resume", "session": session}))
        assert (await recv(ws, "session"))["session"] == session
        texts = [(await recv(ws))["text"] for _ in range(4)]
        assert texts[1] == first
        assert texts[3] == "Buenos días, ¿qué le ocurre con la tarjeta?"


async def test_webchat_self_service_and_rate_limit(live: LiveServer, rt: Any) -> None:
    ws_url = live.url.replace("http", "ws") + "/api/v1/channels/webchat/ws"
    async with connect(ws_url) as ws:
        await recv(ws, "session")
        await recv(ws)
        await ws.send(json.dumps({"type": "message", "text": "¿Cuál es el horario de atención?"}))
        answer = await until_from(ws, "assistant")
        assert "8:30" in answer["text"] and answer.get("ref") is None
        errors = 0
        for i in range(25):  # the default limit is 20 messages a minute per session
            await ws.send(json.dumps({"type": "message", "text": f"horario {i}"}))
        for _ in range(60):
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            errors += frame["type"] == "error"
            if errors:
                break
        assert errors == 1


@pytest.fixture(scope="module")
def strict(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with small per-address limits: 2 open chats, 6 connections a minute, 3 messages a minute."""
    from config.channels import ChannelsConfig, WebchatConfig
    from config.desk import RateLimit

    def build() -> Any:
        rt = make_runtime(redis_server.url, f"t{uuid.uuid4().hex[:10]}", tmp_path_factory.mktemp("strict"),
                          ChannelsConfig(webchat=WebchatConfig(max_sockets_per_address=2, connect_limit=6)))
        rt.settings.desk.rate_limits["chat"] = RateLimit(requests=3, per_seconds=60)
        return rt

    server = LiveServer(build).start()
    yield server
    server.stop()


async def test_webchat_limits_hold_per_client_address(strict: LiveServer) -> None:
    """The session id is the client's choice: new sessions do not buy more messages, sockets or connections."""
    from websockets.exceptions import InvalidStatus

    ws_url = strict.url.replace("http", "ws") + "/api/v1/channels/webchat/ws"
    async with connect(ws_url) as a, connect(ws_url) as b:
        for ws in (a, b):
            await recv(ws, "session")
            await recv(ws)
        with pytest.raises(InvalidStatus):  # a third chat from the same address at once
            async with connect(ws_url):
                pass
        errors = []
        for i, ws in enumerate((a, b, a, b)):  # 3 messages a minute per address, whatever the session
            await ws.send(json.dumps({"type": "message", "text": f"gracias {i}"}))
            while True:  # the echo of the citizen's message, or the refusal
                frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if frame["type"] == "error" or frame.get("text") == f"gracias {i}":
                    break
            errors.append(frame["type"] == "error")
        assert errors == [False, False, False, True]
    for _ in range(3):  # connections per minute: 3 so far, 3 more fit, then refused
        async with connect(ws_url) as ws:
            await recv(ws, "session")
    with pytest.raises(InvalidStatus):
        async with connect(ws_url):
            pass


async def test_an_agents_reply_is_seen_only_when_a_widget_shows_it(live: LiveServer, rt: Any) -> None:
    """A reply while the widget is open is 'sent' until the widget acknowledges it ('read', seen); one sent after
    the citizen left is marked not delivered, so the desk tells the agent to use another channel."""
    ws_url = live.url.replace("http", "ws") + "/api/v1/channels/webchat/ws"

    async def delivery(ref: str, interaction_id: str) -> dict[str, Any]:
        its = {i.id: i for i in await rt.desk.tickets.interactions(ref)}
        return dict(its[interaction_id].data.get("delivery") or {})

    async with connect(ws_url) as ws:
        session = (await recv(ws, "session"))["session"]
        await ws.send(json.dumps({"type": "message", "text": "Quiero hablar con una persona sobre mi padrón"}))
        ref = None
        while not ref:  # the greeting comes first
            ref = (await until_from(ws, "assistant")).get("ref")
        out = await rt.desk.tickets.reply(ref, "Dígame, ¿qué necesita?", actor="agent:ana")
        agent = await until_from(ws, "agent")
        first = await delivery(ref, out.interaction.id)
        assert first["status"] in ("sent", "read") and first["ids"] == [agent["id"]]
        # Another session cannot acknowledge it; this one does (as the widget does on showing it).
        async with connect(ws_url) as other:
            await recv(other, "session")
            await other.send(json.dumps({"type": "ack", "id": agent["id"]}))
            await other.send(json.dumps({"type": "bogus"}))
            await recv(other, "error")  # frames are handled in order: the ack was handled before this
        assert (await delivery(ref, out.interaction.id)).get("seen") is False
        await ws.send(json.dumps({"type": "ack", "id": agent["id"]}))
        for _ in range(100):
            if (await delivery(ref, out.interaction.id)).get("seen"):
                break
            await asyncio.sleep(0.02)
        assert (await delivery(ref, out.interaction.id))["status"] == "read"
    # The citizen closed the chat: the next reply is kept in the conversation but not delivered.
    for _ in range(100):  # the server notices the closed socket on its own loop
        if not await rt.store.redis.get(rt.store.keys.webchat_log(session) + ":online"):
            break
        await asyncio.sleep(0.02)
    late = await rt.desk.tickets.reply(ref, "¿Sigue ahí?", actor="agent:ana")
    d = await delivery(ref, late.interaction.id)
    assert d["status"] == "failed" and "otro canal" in d["reason"], d
    assert any("¿Sigue ahí?" in str(x) for x in await rt.store.redis.lrange(rt.store.keys.webchat_log(session), 0, -1))


async def test_a_session_in_the_url_is_ignored(live: LiveServer, rt: Any) -> None:
    """SECURITY.md: a session id is never taken from a URL (URLs end up in proxies' logs): `?session=` opens a new
    conversation, not the one it names."""
    ws_url = live.url.replace("http", "ws") + "/api/v1/channels/webchat/ws"
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "resume", "session": None}))
        session = (await recv(ws, "session"))["session"]
        await recv(ws)  # the greeting
    async with connect(f"{ws_url}?session={session}") as ws:
        await ws.send(json.dumps({"type": "resume", "session": None}))
        assert (await recv(ws, "session"))["session"] != session


async def test_an_internal_error_reaches_the_citizen_as_an_apology(live: LiveServer, rt: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A service's refusal (e.g. a routing version naming a queue the desk lacks: "unknown queue 'X'") is for staff:
    the citizen gets a Spanish apology, never the internal message."""
    from core.errors import InvalidInput
    from desk_api.channels import assistant, webchat

    async def refuse(*_: Any, **__: Any) -> Any:
        raise InvalidInput("unknown queue 'FANTASMA'", {"queue": "FANTASMA"})

    monkeypatch.setattr(assistant, "handle", refuse)  # the server runs in this process, in another thread
    ws_url = live.url.replace("http", "ws") + "/api/v1/channels/webchat/ws"
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "message", "text": "quiero poner una reclamación formal"}))
        error = await recv(ws, "error")
    assert error["message"] == webchat.FAILED and error["message"].startswith("Lo sentimos")
    assert "queue" not in error["message"]
