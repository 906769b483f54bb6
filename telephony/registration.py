"""The REGISTER client: one refresh loop per `sip.registrations` entry, digest if challenged, un-REGISTER on stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from config.telephony import Registration
from core import logs
from telephony.line import Line
from telephony.sip import build, digest
from telephony.sip.message import Address, Request, SipParseError, SipUri, is_num, new_token

log = logging.getLogger(__name__)


def refresh_delay(expires: int) -> float:
    """Refresh a registration halfway through, but at least 30 s early on long ones and never sooner than 5 s."""
    return max(5.0, min(expires * 0.5, expires - 30.0))


@dataclass
class _Binding:
    """What survives between REGISTERs of one AOR: RFC 3261 10.2 wants one Call-ID and rising CSeq."""

    call_id: str
    tag: str = field(default_factory=new_token)
    cseq: int = 0


class Registrations:
    def __init__(self, line: Line) -> None:
        self.line = line
        # per AOR: {"registered", "expires", "detail", "at"} (what /healthz and the tests read)
        self.status: dict[str, dict[str, object]] = {}
        self._bindings: dict[str, _Binding] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def aor(self, reg: Registration) -> str:
        domain = reg.domain or SipUri.parse(reg.registrar).host
        return f"sip:{reg.user}@{domain}"

    def start(self) -> None:
        for reg in self.line.cfg.registrations:
            self._tasks.append(asyncio.create_task(self._loop(reg), name=f"register-{reg.user}"))

    async def stop(self, grace_s: float) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        regs = self.line.cfg.registrations
        unreg = [asyncio.create_task(self.register_once(r, expires=0)) for r in regs
                 if self.status.get(self.aor(r), {}).get("registered")]
        for r in regs:
            self.status.get(self.aor(r), {})["registered"] = False
        if unreg:
            await asyncio.wait(unreg, timeout=min(2.0, grace_s))

    async def _loop(self, reg: Registration) -> None:
        aor = self.aor(reg)
        while not self.line.stopping:
            try:
                ok, expires, detail = await self.register_once(reg, expires=reg.expires)
            except Exception as exc:
                ok, expires, detail = False, 0, str(exc)
            self.status[aor] = {"registered": ok, "expires": expires, "detail": detail,
                                "at": self.line.clock.now().isoformat()}
            if ok:
                log.info("registered", extra=logs.fields(aor=aor, expires=expires))
                await asyncio.sleep(refresh_delay(expires))
            else:
                log.warning("registration failed", extra=logs.fields(aor=aor, detail=detail))
                await asyncio.sleep(self.line.cfg.register_retry_s)

    async def register_once(self, reg: Registration, *, expires: int) -> tuple[bool, int, str]:
        line = self.line
        registrar = SipUri.parse(reg.registrar)
        aor = self.aor(reg)
        binding = self._bindings.setdefault(aor, _Binding(call_id=f"{uuid.uuid4().hex}@{line.host}"))
        contact = f"<sip:{reg.user}@{line.hostport()}>"
        auth: tuple[str, str] | None = None
        ruri = f"sip:{registrar.host}" + (f":{registrar.port}" if registrar.port else "")
        for _ in range(3):
            binding.cseq += 1
            req: Request = build.request("REGISTER", ruri, via=line.via, from_=f"<{aor}>;tag={binding.tag}",
                                         to=f"<{aor}>", call_id=binding.call_id, cseq=binding.cseq, contact=contact,
                                         extra=[("expires", str(expires)), ("user-agent", line.cfg.user_agent),
                                                *([auth] if auth else [])])
            dest = await line.resolve(*registrar.hostport)
            tx = line.layer.start_client(req, dest)
            resp = await asyncio.shield(tx.final)
            if resp.status in (401, 407) and auth is None:
                challenge = resp.headers.get("www-authenticate" if resp.status == 401 else "proxy-authenticate")
                if not challenge:
                    return False, 0, f"{resp.status} without a challenge"
                if tx.final_source is None or tx.final_source[0] != dest[0]:  # the password is the registrar's only
                    return False, 0, f"{resp.status} challenge from {tx.final_source}, not the registrar"
                value = digest.authorization(challenge, user=reg.auth_user or reg.user, password=reg.password,
                                             method="REGISTER", uri=ruri)
                auth = ("authorization" if resp.status == 401 else "proxy-authorization", value)
                continue
            if 200 <= resp.status < 300:
                granted = expires
                for c in resp.headers.get_all("contact"):
                    with contextlib.suppress(SipParseError, ValueError):
                        a = Address.parse(c)
                        if a.uri.user == reg.user and a.uri.host == line.host and a.params.get("expires"):
                            granted = int(a.params["expires"] or expires)
                if granted == expires and is_num(resp.headers.get("expires") or ""):
                    granted = int(resp.headers.get("expires") or expires)
                return True, granted, f"{resp.status} {resp.reason}"
            return False, 0, f"{resp.status} {resp.reason}"
        return False, 0, "authentication failed"
