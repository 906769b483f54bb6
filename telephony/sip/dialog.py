"""Dialog state (RFC 3261 12): tags, CSeq, remote target and route set, in-dialog requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from telephony.sip import build
from telephony.sip.message import Address, Request, Response, SipUri


@dataclass
class Dialog:
    call_id: str
    local: Address  # our From (UAC) or To (UAS), with our tag
    remote: Address  # the peer's, with its tag
    remote_target: SipUri
    route_set: list[str] = field(default_factory=list)  # Route values, in the order we must send them
    local_cseq: int = 1
    remote_cseq: int | None = None

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @property
    def remote_tag(self) -> str:
        return self.remote.tag or ""

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str) -> Dialog:
        to = invite.to
        to.params["tag"] = local_tag
        contact = invite.headers.get("contact")
        target = Address.parse(contact).uri if contact else invite.from_.uri
        return cls(call_id=invite.call_id, local=to, remote=invite.from_, remote_target=target,
                   route_set=invite.headers.get_all("record-route"), local_cseq=1, remote_cseq=invite.cseq[0])

    @classmethod
    def as_uac(cls, invite: Request, resp: Response) -> Dialog:
        contact = resp.headers.get("contact")
        target = Address.parse(contact).uri if contact else SipUri.parse(invite.uri)
        return cls(call_id=invite.call_id, local=invite.from_, remote=resp.to, remote_target=target,
                   route_set=list(reversed(resp.headers.get_all("record-route"))), local_cseq=invite.cseq[0])

    def next_hop(self) -> tuple[str, int]:
        """Where in-dialog requests go: the first route, or the remote target."""
        if self.route_set:
            return Address.parse(self.route_set[0]).uri.hostport
        return self.remote_target.hostport

    def request(self, method: str, *, via: str, contact: str, body: bytes = b"", content_type: str | None = None,
                cseq: int | None = None, extra: list[tuple[str, str]] | None = None) -> Request:
        """A new in-dialog request (ACK for a 2xx passes the INVITE's CSeq number)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        routes = list(self.route_set)
        ruri = str(self.remote_target)
        if routes and "lr" not in Address.parse(routes[0]).uri.params:  # strict routing (RFC 2543 proxies)
            ruri = str(Address.parse(routes[0]).uri)
            routes = [*routes[1:], f"<{self.remote_target}>"]
        return build.request(method, ruri, via=via, from_=str(self.local), to=str(self.remote), call_id=self.call_id,
                             cseq=cseq, contact=contact, routes=routes, extra=extra or (), body=body,
                             content_type=content_type)
