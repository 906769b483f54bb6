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
from collections.abc import Callable
from dataclasses import dataclass, field

from telephony.sip.message import Headers, Request, Response, SipParseError, Via

log = logging.getLogger(__name__)

T1 = 0.5
T2 = 4.0
T4 = 5.0
LINGER = 32.0  # how long a finished transaction keeps absorbing retransmissions (Timers J / I / D)

Send = Callable[[bytes, tuple[str, int]], None]


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
    request: Request
    addr: tuple[str, int]
    to_tag: str
    last_response: bytes | None = None
    final_status: int | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    expire: asyncio.TimerHandle | None = None


class TransactionLayer:
    def __init__(self, send: Send) -> None:
        self.send = send
        self.server: dict[tuple[str, ...], ServerTransaction] = {}
        self.client: dict[tuple[str, str], ClientTransaction] = {}

    # ---- server ---------------------------------------------------------------------------

    def match_server(self, req: Request) -> ServerTransaction | None:
        return self.server.get(server_key(req))

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        return self.server.get((*server_key(cancel)[:-1], "INVITE"))

    def create_server(self, req: Request, addr: tuple[str, int], to_tag: str) -> ServerTransaction:
        key = server_key(req)
        tx = ServerTransaction(key=key, method=req.method, request=req, addr=addr, to_tag=to_tag)
        self.server[key] = tx
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

    def _drop(self, key: tuple[str, ...]) -> None:
        tx = self.server.pop(key, None)
        if tx and tx.task:
            tx.task.cancel()

    # ---- client ---------------------------------------------------------------------------

    def start_client(self, req: Request, addr: tuple[str, int],
                     on_provisional: Callable[[Response], None] | None = None) -> ClientTransaction:
        tx = ClientTransaction(self, req, addr, on_provisional)
        self.client[(tx.branch, req.method)] = tx
        tx.start()
        return tx

    def on_response(self, resp: Response) -> bool:
        try:
            branch = resp.vias[0].branch or ""
            _, method = resp.cseq
        except (SipParseError, IndexError):
            return False
        tx = self.client.get((branch, method))
        if tx is None:
            return False
        tx.receive(resp)
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

    def receive(self, resp: Response) -> None:
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


def top_via(req: Request) -> Via:
    return req.vias[0]
