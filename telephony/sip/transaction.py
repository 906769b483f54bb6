"""SIP transactions over UDP (RFC 3261 17, with RFC 6026's Accepted state).

Server side: a retransmitted request never reaches the application again; it gets the last
response re-sent (or nothing, if none was sent yet). A non-2xx final to an INVITE is
retransmitted (Timer G) until its ACK arrives or Timer H fires. 2xx retransmission until the
ACK is the dialog's job (see `endpoint.py`), as RFC 3261 13.3.1.4 says.

Client side: requests are retransmitted (Timers A/E) until a response arrives and time out
after 64*T1 (Timers B/F); a non-2xx final to an INVITE is ACKed here with the same branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from telephony.sip.message import Headers, Request, Response, SipParseError, Via

log = logging.getLogger(__name__)

T1 = 0.5
T2 = 4.0
T4 = 5.0
LINGER = 32.0  # how long a finished transaction keeps absorbing retransmissions (Timers J / I / D)

Send = Callable[[bytes, tuple[str, int]], None]

# What a server transaction keeps of its request: enough to build and re-send responses. The body (an SDP, or
# 60 kB of junk from whoever sent it) and every other header go once the request has been handled.
_KEPT_HEADERS = frozenset({"via", "from", "to", "call-id", "cseq", "record-route"})


def _slim(req: Request) -> Request:
    return Request(req.method, req.uri, Headers([(k, v) for k, v in req.headers.items if k in _KEPT_HEADERS]))


def server_key(req: Request) -> tuple[str, ...]:
    """Transaction id of a request (RFC 3261 17.2.3); ACK and CANCEL map onto their INVITE by `method`."""
    via = req.vias[0]
    method = "INVITE" if req.method == "ACK" else req.method
    branch = via.branch or ""
    if branch.startswith("z9hG4bK"):
        return (branch, f"{via.host}:{via.port or 5060}", method)
    # RFC 2543 peers: no magic cookie, match on the classic fields.
    num, _ = req.cseq
    return ("2543", req.call_id, req.from_.tag or "", (req.to.tag or "") if req.method != "ACK" else "",
            str(num), str(via), method)


@dataclass
class ServerTransaction:
    key: tuple[str, ...]
    method: str
    request: Request  # headers for responses only (see _slim)
    addr: tuple[str, int]
    to_tag: str
    source: str = ""  # the IP address the request came from, for the per-source cap
    last_response: bytes | None = None
    final_status: int | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    expire: asyncio.TimerHandle | None = None


class TransactionLayer:
    def __init__(self, send: Send, *, max_server: int = 4096, max_server_per_source: int = 64,
                 unlimited: Callable[[str], bool] = lambda _ip: False) -> None:
        self.send = send
        self.server: dict[tuple[str, ...], ServerTransaction] = {}
        self.client: dict[tuple[str, str], ClientTransaction] = {}
        self.max_server = max_server
        self.max_server_per_source = max_server_per_source
        self.unlimited = unlimited  # sources exempt from the per-source cap (trusted proxies)
        self._per_source: Counter[str] = Counter()

    # ---- server ---------------------------------------------------------------------------

    def match_server(self, req: Request) -> ServerTransaction | None:
        return self.server.get(server_key(req))

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        return self.server.get((*server_key(cancel)[:-1], "INVITE"))

    def can_create(self, source: str) -> bool:
        """Room for one more server transaction from `source`: each lingers 32 s, so a flood of distinct requests
        would otherwise grow memory without bound."""
        if len(self.server) >= self.max_server:
            return False
        return self.unlimited(source) or self._per_source[source] < self.max_server_per_source

    def create_server(self, req: Request, addr: tuple[str, int], to_tag: str, source: str = "") -> ServerTransaction:
        key = server_key(req)
        tx = ServerTransaction(key=key, method=req.method, request=_slim(req), addr=addr, to_tag=to_tag,
                               source=source)
        old = self.server.get(key)
        if old is not None:
            self._forget(old)
        self.server[key] = tx
        self._per_source[source] += 1
        if req.method != "INVITE":  # a non-INVITE transaction that never answers still goes away
            tx.expire = asyncio.get_running_loop().call_later(LINGER * 2, self._drop, key)
        return tx

    def respond(self, tx: ServerTransaction, resp: Response) -> None:
        data = resp.to_bytes()
        tx.last_response = data
        self.send(data, tx.addr)
        if resp.status < 200:
            return
        tx.final_status = resp.status
        if tx.expire:
            tx.expire.cancel()
        loop = asyncio.get_running_loop()
        if tx.method == "INVITE" and resp.status >= 300:
            tx.task = asyncio.create_task(self._retransmit_final(tx, data))
        tx.expire = loop.call_later(LINGER, self._drop, tx.key)

    async def _retransmit_final(self, tx: ServerTransaction, data: bytes) -> None:
        interval = T1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(64 * T1):
                while not tx.acked.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(tx.acked.wait(), interval)
                    if not tx.acked.is_set():
                        self.send(data, tx.addr)
                    interval = min(interval * 2, T2)

    def absorb(self, tx: ServerTransaction, req: Request) -> None:
        """A retransmitted request or the ACK of a non-2xx final."""
        if req.method == "ACK":
            tx.acked.set()
        elif tx.last_response is not None:
            self.send(tx.last_response, tx.addr)

    def discard(self, tx: ServerTransaction) -> None:
        """Remove a transaction now (one that could not even be answered)."""
        if self.server.get(tx.key) is tx:
            self._drop(tx.key)

    def _drop(self, key: tuple[str, ...]) -> None:
        tx = self.server.pop(key, None)
        if tx is not None:
            self._forget(tx)

    def _forget(self, tx: ServerTransaction) -> None:
        if tx.task:
            tx.task.cancel()
        if tx.expire:
            tx.expire.cancel()
        self._per_source[tx.source] -= 1
        if self._per_source[tx.source] <= 0:
            del self._per_source[tx.source]

    # ---- client ---------------------------------------------------------------------------

    def start_client(self, req: Request, addr: tuple[str, int],
                     on_provisional: Callable[[Response], None] | None = None) -> ClientTransaction:
        tx = ClientTransaction(self, req, addr, on_provisional)
        self.client[(tx.branch, req.method)] = tx
        tx.start()
        return tx

    def on_response(self, resp: Response, source: tuple[str, int] | None = None) -> bool:
        try:
            branch = resp.vias[0].branch or ""
            _, method = resp.cseq
        except (SipParseError, IndexError):
            return False
        tx = self.client.get((branch, method))
        if tx is None:
            return False
        tx.receive(resp, source)
        return True

    def close(self) -> None:
        for stx in list(self.server.values()):
            if stx.task:
                stx.task.cancel()
            if stx.expire:
                stx.expire.cancel()
        for ctx in list(self.client.values()):
            ctx.stop()
        self.server.clear()
        self.client.clear()
        self._per_source.clear()


class ClientTransaction:
    def __init__(self, layer: TransactionLayer, req: Request, addr: tuple[str, int],
                 on_provisional: Callable[[Response], None] | None) -> None:
        self.layer = layer
        self.request = req
        self.addr = addr
        self.branch = req.vias[0].branch or ""
        self.on_provisional = on_provisional
        self.final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.provisional = False
        self.final_source: tuple[str, int] | None = None  # where the final response came from (digest: trunk only)
        self.ack: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        self._expire: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.layer.send(self.request.to_bytes(), self.addr)  # the first copy leaves now, even if we stop at once
        self._task = asyncio.create_task(self._retransmit())

    async def _retransmit(self) -> None:
        data = self.request.to_bytes()
        invite = self.request.method == "INVITE"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 64 * T1
        interval = T1
        while not self.final.done():
            if invite and self.provisional:  # ringing: the caller's ring timeout governs from here
                await self.final_or_wait()
                return
            left = deadline - loop.time()
            if left <= 0:
                self.final.set_result(Response(408, "Request Timeout", Headers(self.request.headers.items)))
                self._linger()
                return
            await asyncio.sleep(min(interval, left))
            if self.final.done() or (invite and self.provisional) or loop.time() >= deadline:
                continue
            self.layer.send(data, self.addr)
            interval = T2 if self.provisional else (interval * 2 if invite else min(interval * 2, T2))

    async def final_or_wait(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self.final)

    def receive(self, resp: Response, source: tuple[str, int] | None = None) -> None:
        if resp.status < 200:
            self.provisional = True
            if not self.final.done() and self.on_provisional:
                self.on_provisional(resp)
            return
        if self.request.method == "INVITE" and resp.status >= 300:
            if self.ack is None:
                self.ack = build_ack_for_failure(self.request, resp).to_bytes()
            self.layer.send(self.ack, self.addr)
        elif self.ack is not None:  # a retransmitted 2xx: the dialog's ACK again
            self.layer.send(self.ack, self.addr)
        if not self.final.done():
            self.final_source = source
            self.final.set_result(resp)
            self._linger()

    def _linger(self) -> None:
        if self._expire is None:
            self._expire = asyncio.get_running_loop().call_later(LINGER, self.stop)

    def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._expire:
            self._expire.cancel()
        self.layer.client.pop((self.branch, self.request.method), None)
        if not self.final.done():
            self.final.cancel()


def build_ack_for_failure(invite: Request, resp: Response) -> Request:
    """RFC 3261 17.1.1.3: same R-URI, top Via, From, Call-ID, Route; To from the response."""
    h = Headers()
    h.add("via", invite.headers.get_all("via")[0])
    for r in invite.headers.get_all("route"):
        h.add("route", r)
    h.add("max-forwards", "70")
    h.add("from", invite.headers.get("from") or "")
    h.add("to", resp.headers.get("to") or "")
    h.add("call-id", invite.call_id)
    h.add("cseq", f"{invite.cseq[0]} ACK")
    return Request("ACK", invite.uri, h)


def build_cancel(invite: Request) -> Request:
    """RFC 3261 9.1: the INVITE's R-URI, top Via (same branch), Route, From, To and Call-ID; CSeq number too."""
    h = Headers()
    h.add("via", invite.headers.get_all("via")[0])
    for r in invite.headers.get_all("route"):
        h.add("route", r)
    h.add("max-forwards", "70")
    for name in ("from", "to", "call-id"):
        h.add(name, invite.headers.get(name) or "")
    h.add("cseq", f"{invite.cseq[0]} CANCEL")
    return Request("CANCEL", invite.uri, h)


def top_via(req: Request) -> Via:
    return req.vias[0]
