"""Web chat: a WebSocket per browser session plus the small widget page (`/chat`).

Every message of a session (the citizen's, the assistant's, an agent's) is appended to the
session's log in Redis and published on the session's pub/sub channel, so an agent's reply
sent by any node reaches the browser connected to any other node, and a reconnecting widget
replays the conversation. Frames, server to browser: `{"type": "session", "session"}`,
`{"type": "message", "id", "from": "citizen"|"assistant"|"agent", "text", "at", "ref"}`,
`{"type": "error", "message"}`. Browser to server: `{"type": "message", "text", "id"?}`, and `{"type": "ack", "id"}`
for each agent's message shown (the ticket records it seen; a reply sent while no widget is open is marked
not delivered, so the agent knows to use another channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse

from core.errors import AtiendeError, RateLimited
from desk_api.auth import client_of
from desk_api.channels import assistant, deskport
from desk_api.channels.base import Contact, Inbound, channels_config, clean_text
from desk_api.context import Services
from desk_api.live import hub_for

log = logging.getLogger(__name__)
router = APIRouter(tags=["channels"])

WEB = Path(__file__).resolve().parent.parent / "web"
_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
LOG_KEEP = 200
MAX_FRAME = 16_384  # characters; a chat message is cut to `max_message_chars` anyway
FAILED = "Lo sentimos, no hemos podido atender su mensaje. Inténtelo de nuevo en unos minutos."
LOG_TTL_S = 7 * 86400


async def push(rt: Services, session: str, message: dict[str, Any]) -> dict[str, Any]:
    """Append a message to the session's log and publish it to whichever node holds the socket."""
    msg = {**message, "type": "message", "id": message.get("id") or secrets.token_hex(6), "at": rt.clock.now().isoformat()}
    raw = json.dumps(msg, ensure_ascii=False)
    k = rt.store.keys
    async with rt.store.redis.pipeline(transaction=True) as pipe:
        pipe.rpush(k.webchat_log(session), raw)
        pipe.ltrim(k.webchat_log(session), -LOG_KEEP, -1)
        pipe.expire(k.webchat_log(session), LOG_TTL_S)
        pipe.publish(k.webchat_out(session), raw)
        await pipe.execute()
    return {"webchat_message_id": msg["id"]}


def _online_key(rt: Services, session: str) -> str:
    """How many widgets have this conversation open now (any node): an agent's reply to none is not seen."""
    return rt.store.keys.webchat_log(session) + ":online"


def _reply_key(rt: Services, session: str, message_id: str) -> str:
    # Bound to the session: a widget acknowledges only what was sent to its own conversation.
    return rt.store.keys.channel_outbound("webchat", f"{session}:{message_id}")


GONE = ("el ciudadano ya no tiene abierto el chat web y no ha visto la respuesta; si lo necesita, "
        "contacte con él por otro canal")


async def send_agent_reply(rt: Services, session: str, text: str, ref: str | None,
                           interaction_id: str | None) -> dict[str, Any]:
    """An agent's reply: pushed to the conversation, and not counted as seen until a widget acknowledges it.
    No widget open at all: the reply stays in the conversation's log, but the ticket says it was not delivered,
    so the agent knows to use another channel."""
    message_id = secrets.token_hex(6)
    if ref and interaction_id:  # before the push: the widget's acknowledgement may come back at once
        await rt.store.redis.set(_reply_key(rt, session, message_id), f"{ref} {interaction_id}", ex=LOG_TTL_S)
    out = await push(rt, session, {"id": message_id, "from": "agent", "text": text, "ref": ref})
    if not (ref and interaction_id):
        return out
    details = {"ids": [message_id], "seen": False}
    if int(await rt.store.redis.get(_online_key(rt, session)) or 0) > 0:
        await deskport.set_delivery(rt, ref, interaction_id, "sent", details=details)
    else:
        await deskport.set_delivery(rt, ref, interaction_id, "failed", reason=GONE, details=details)
    return out


async def _ack(rt: Services, session: str, message_id: Any) -> None:
    """The widget showed one of our messages: an agent's reply is marked seen ("read")."""
    if not isinstance(message_id, str) or not _ID_RE.match(message_id):
        return
    raw = await rt.store.redis.get(_reply_key(rt, session, message_id))
    if raw:
        ref, _, interaction_id = str(raw).partition(" ")
        await deskport.set_delivery(rt, ref, interaction_id, "read", details={"seen": True})


async def _forward(ws: WebSocket, rt: Services, session: str, sent: set[str]) -> None:
    """The session's messages to this socket: its log first, then pushes from this process's one pub/sub reader
    (desk_api/live.py), not a Redis connection per socket. The listener is registered before the log is read, so
    nothing falls between; after a reader reconnect (None) the log is read again, and `sent` drops repeats."""
    hub = hub_for(ws.app.state, rt)
    listener = hub.listen_chat(rt.store.keys.webchat_out(session))
    try:
        history = await rt.store.redis.lrange(rt.store.keys.webchat_log(session), 0, -1)
        if not history:
            await push(rt, session, {"from": "assistant", "text": channels_config(rt).webchat.greeting})
        for raw in history:
            await _send_once(ws, str(raw), sent)
        while True:
            item = await listener.get()
            if item is None:
                for raw in await rt.store.redis.lrange(rt.store.keys.webchat_log(session), 0, -1):
                    await _send_once(ws, str(raw), sent)
            else:
                await _send_once(ws, item, sent)
    finally:
        hub.unlisten_chat(listener)


async def _send_once(ws: WebSocket, raw: str, sent: set[str]) -> None:
    msg = json.loads(raw)
    if msg.get("id") in sent:
        return
    sent.add(msg.get("id", ""))
    await ws.send_text(raw)


async def _on_message(ws: WebSocket, rt: Services, session: str, frame: Any) -> None:
    cfg = channels_config(rt).webchat
    if isinstance(frame, dict) and frame.get("type") == "ack":
        await _ack(rt, session, frame.get("id"))
        return
    if isinstance(frame, str):
        frame = {"type": "message", "text": frame}
    if not isinstance(frame, dict) or frame.get("type", "message") != "message" or not isinstance(frame.get("text"), str):
        await ws.send_json({"type": "error", "message": "Mensaje no válido."})
        return
    text = clean_text(frame["text"], cfg.max_message_chars)
    if not text:
        return
    try:
        await deskport.rate_hit(rt, f"webchat:{session}", cfg.rate_limit, cfg.rate_window_s)
        # The session id is the client's choice: the limit that holds is per client address (desk.rate_limits.chat).
        await deskport.address_hit(rt, "chat", client_of(ws))
    except RateLimited:
        await ws.send_json({"type": "error", "message": "Está escribiendo muy deprisa. Espere un momento, por favor."})
        return
    cid = frame.get("id") if isinstance(frame.get("id"), str) and _ID_RE.match(frame["id"]) else None
    out = await push(rt, session, {"id": cid, "from": "citizen", "text": text})
    inbound = Inbound(contact=Contact(channel="webchat", address=session), text=text,
                      message_id=out["webchat_message_id"], threads=[session])
    reply = await assistant.handle(rt, inbound)
    if reply.text:
        await push(rt, session, {"from": "assistant", "text": reply.text, "ref": reply.ref})


_SOCKETS: dict[str, int] = {}  # open sockets per client address on this node


RESUME_WAIT_S = 1.0


@router.websocket("/api/v1/channels/webchat/ws")
async def webchat_socket(websocket: WebSocket) -> None:
    """A conversation is resumed only by the page's first frame, `{"type": "resume", "session"}`: a session id in
    the URL (`?session=`) is ignored, as URLs end up in proxies' and servers' logs (SECURITY.md)."""
    rt: Services = websocket.app.state.services
    cfg = channels_config(rt).webchat
    if not cfg.enabled:
        await websocket.close(code=1008, reason="web chat disabled")
        return
    address = client_of(websocket)
    try:
        await deskport.rate_hit(rt, f"wsconn:{address}", cfg.connect_limit, cfg.connect_window_s)
    except RateLimited:
        await websocket.close(code=1013, reason="too many connections, try again later")
        return
    if _SOCKETS.get(address, 0) >= cfg.max_sockets_per_address:
        await websocket.close(code=1013, reason="too many open chats from this address")
        return
    _SOCKETS[address] = _SOCKETS.get(address, 0) + 1
    try:
        await _serve(websocket, rt)
    finally:
        left = _SOCKETS.get(address, 1) - 1
        if left > 0:
            _SOCKETS[address] = left
        else:
            _SOCKETS.pop(address, None)


async def _resume(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The page names its conversation in a first frame, not in the URL (URLs end up in proxies' logs):
    (session id, or None; the first frame's text when it was something else, to be handled as a message)."""
    try:
        raw = await asyncio.wait_for(websocket.receive_text(), RESUME_WAIT_S)
    except TimeoutError:
        return None, None
    try:
        frame: Any = json.loads(raw)
    except ValueError:
        return None, raw
    if isinstance(frame, dict) and frame.get("type") == "resume":
        given = frame.get("session")
        return (given if isinstance(given, str) and _SESSION_RE.match(given) else None), None
    return None, raw


async def _serve(websocket: WebSocket, rt: Services) -> None:
    await websocket.accept()
    session, pending = await _resume(websocket)
    sid = session if session and _SESSION_RE.match(session) else secrets.token_urlsafe(18)
    await websocket.send_json({"type": "session", "session": sid})
    online = _online_key(rt, sid)
    async with rt.store.redis.pipeline(transaction=True) as pipe:
        pipe.incr(online)
        pipe.expire(online, 86400)  # a node that dies leaves its count behind for a day at most
        await pipe.execute()
    sent: set[str] = set()
    forwarder = asyncio.create_task(_forward(websocket, rt, sid, sent))
    try:
        while True:
            raw = pending if pending is not None else await websocket.receive_text()
            pending = None
            if len(raw) > MAX_FRAME:
                await websocket.send_json({"type": "error", "message": "El mensaje es demasiado largo."})
                continue
            try:
                frame: Any = json.loads(raw)
            except ValueError:
                frame = raw
            try:
                await _on_message(websocket, rt, sid, frame)
            except AtiendeError as exc:
                # Services' messages are for staff (English, internal: "unknown queue 'X'"): the citizen gets an
                # apology. What went wrong is logged by its id (never the session id: it reads the conversation).
                log.warning("web chat message refused: %s", exc.error_id)
                await websocket.send_json({"type": "error", "message": FAILED})
            except Exception:
                log.exception("web chat message failed")  # never the session id: it reads the conversation
                await websocket.send_json({"type": "error", "message": FAILED})
            if forwarder.done():
                break
    except WebSocketDisconnect:
        pass
    finally:
        forwarder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await forwarder
        with contextlib.suppress(Exception):  # the socket is gone either way; the count lapses within a day
            if int(await rt.store.redis.decr(online)) <= 0:
                await rt.store.redis.delete(online)


@router.get("/chat", include_in_schema=False)
async def widget_page() -> FileResponse:
    return FileResponse(WEB / "chat.html", media_type="text/html")
