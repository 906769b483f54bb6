"""deploy/: the configurations are checked by the programs that read them, and deploy/kamailio/dispatcher.cfg is run
for real on loopback in front of two small SIP nodes (enough SIP to answer OPTIONS and INVITE, as an Atiende node
does): round robin, failover when a node dies, a dead or draining node taken out within seconds, flood bans."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from core.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent
KAMAILIO = shutil.which("kamailio") or ("/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)
NEEDS_KAMAILIO = pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed (make test installs it)")
REDIS = shutil.which("redis-server")


@NEEDS_KAMAILIO
@pytest.mark.parametrize("cfg", ["dispatcher.cfg", "kamailio.cfg"])
def test_kamailio_configs_pass_kamailio_check(cfg: str, tmp_path: Path) -> None:
    ds = tmp_path / "dispatcher.list"
    ds.write_text("1 sip:127.0.0.1:5070 0 0\n1 sip:127.0.0.1:5071 0 0\n")
    r = subprocess.run([str(KAMAILIO), "-c", "-f", str(REPO / "deploy" / "kamailio" / cfg),
                        "-A", f'DISPATCHER_LIST="{ds}"'], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "config file ok" in r.stderr, r.stderr[-3000:]


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
@pytest.mark.parametrize("conf", ["primary.conf", "replica.conf"])
def test_redis_configs_are_accepted_by_redis_server(conf: str, tmp_path: Path) -> None:
    """redis-server --test-memory is no config check; starting it on a free port with the file is."""
    import redis

    port = free_port()
    text = (REPO / "deploy" / "redis" / conf).read_text()
    text = re.sub(r"^(include|dir|logfile|pidfile|port|bind|replicaof|unixsocket)\b.*$", "", text, flags=re.M)
    path = tmp_path / conf
    path.write_text(text)
    proc = subprocess.Popen([str(REDIS), str(path), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
                             "--daemonize", "no", "--requirepass", "x", "--masterauth", "x"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, password="x", socket_connect_timeout=0.3)
        try:
            for _ in range(100):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        break
                time.sleep(0.05)
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert client.config_get("appendfsync")["appendfsync"] == "always"
        finally:
            client.close()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
def test_sentinel_config_is_accepted(tmp_path: Path) -> None:
    import redis

    port = free_port()
    text = (REPO / "deploy" / "redis" / "sentinel.conf").read_text()
    text = re.sub(r"^(dir|logfile|pidfile|port|bind)\b.*$", "", text, flags=re.M)
    path = tmp_path / "sentinel.conf"
    path.write_text(text + f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n")
    proc = subprocess.Popen([str(REDIS), str(path), "--sentinel"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, socket_connect_timeout=0.3, decode_responses=True)
        try:
            masters: object = None
            for _ in range(100):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(redis.RedisError):
                    masters = client.sentinel_masters()
                    break
                time.sleep(0.05)
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert isinstance(masters, dict) and "atiende" in masters
        finally:
            client.close()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


# -- the dispatcher, run ------------------------------------------------------------------------------------------

def _headers(msg: str) -> tuple[str, list[tuple[str, str]]]:
    head = msg.split("\r\n\r\n", 1)[0].split("\r\n")
    out = []
    for line in head[1:]:
        name, _, value = line.partition(":")
        out.append((name.strip(), value.strip()))
    return head[0], out


def _reply(request: str, code: int, reason: str, *, to_tag: str | None = None, contact: str | None = None) -> bytes:
    _, hs = _headers(request)
    lines = [f"SIP/2.0 {code} {reason}"]
    for name, value in hs:
        low = name.lower()
        if low in ("via", "v", "from", "f", "call-id", "i", "cseq", "record-route"):
            lines.append(f"{name}: {value}")
        elif low in ("to", "t"):
            lines.append(f"{name}: {value}" + (f";tag={to_tag}" if to_tag and "tag=" not in value else ""))
    if contact:
        lines.append(f"Contact: <{contact}>")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


@dataclass
class FakeNode(asyncio.DatagramProtocol):
    """As much of an Atiende node as the dispatcher sees: OPTIONS 200 (503 while draining), INVITE 100 + 200."""

    name: str
    port: int = field(default_factory=free_port)
    draining: bool = False
    invites: list[str] = field(default_factory=list)
    probes: int = 0
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = data.decode(errors="replace")
        method = msg.split(" ", 1)[0]
        assert self.transport is not None
        if method == "OPTIONS":
            self.probes += 1
            self.transport.sendto(_reply(msg, 503 if self.draining else 200, "Draining" if self.draining else "OK"), addr)
        elif method == "INVITE":
            self.transport.sendto(_reply(msg, 100, "Trying"), addr)
            if self.draining:
                self.transport.sendto(_reply(msg, 503, "Service Unavailable", to_tag="d"), addr)
                return
            call_id = dict((k.lower(), v) for k, v in _headers(msg)[1])["call-id"]
            self.invites.append(call_id)
            self.transport.sendto(_reply(msg, 200, "OK", to_tag=self.name, contact=f"sip:900@127.0.0.1:{self.port}"),
                                  addr)
        elif method in ("BYE", "CANCEL"):
            self.transport.sendto(_reply(msg, 200, "OK"), addr)

    async def start(self) -> FakeNode:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", self.port))
        return self

    def ring(self, kport: int, agent: str) -> None:
        """What a node does to bridge a queued call: INVITE the agent at Kamailio, from the node's SIP port."""
        assert self.transport is not None
        self.transport.sendto("\r\n".join([
            f"INVITE sip:{agent}@127.0.0.1:{kport} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
            "Max-Forwards: 70", f"From: <sip:900@127.0.0.1:{self.port}>;tag=n{self.name}",
            f"To: <sip:{agent}@127.0.0.1>", f"Call-ID: {uuid.uuid4().hex}", "CSeq: 1 INVITE",
            f"Contact: <sip:900@127.0.0.1:{self.port}>", "Content-Length: 0", "", ""]).encode(), ("127.0.0.1", kport))

    def die(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class Client(asyncio.DatagramProtocol):
    """The carrier (or an abuser): sends requests, collects final answers by Call-ID."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.finals: dict[str, asyncio.Future[tuple[int, str]]] = {}
        self.answers: dict[str, str] = {}  # Call-ID -> the last final answer, whole
        self.requests: list[str] = []  # requests sent to this client (an agent's phone being rung)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = data.decode(errors="replace")
        first, hs = _headers(msg)
        if not first.startswith("SIP/2.0"):
            self.requests.append(msg)
            return
        code = int(first.split()[1])
        h = {k.lower(): v for k, v in hs}
        fut = self.finals.get(h.get("call-id", ""))
        if code >= 200 and fut is not None and not fut.done():
            self.answers[h.get("call-id", "")] = msg
            m = re.search(r"tag=([\w.-]+)", h.get("to", ""))
            fut.set_result((code, m.group(1) if m else ""))

    async def start(self) -> Client:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=(self.host, self.port))
        return self

    def send(self, method: str, kport: int, user: str = "900", *, call_id: str | None = None, cseq: int = 1,
             from_user: str = "carrier", from_host: str | None = None,
             extra: tuple[str, ...] = ()) -> asyncio.Future[tuple[int, str]]:
        call_id = call_id or uuid.uuid4().hex
        branch = "z9hG4bK" + uuid.uuid4().hex[:12]
        ruri = f"sip:{user}@127.0.0.1:{kport}" if user else f"sip:127.0.0.1:{kport}"
        req = "\r\n".join([
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{from_user}@{from_host or self.host}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <sip:{user or from_user}@127.0.0.1>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{from_user}@{self.host}:{self.port}>",
            *extra,
            "Content-Length: 0", "", ""])
        fut: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.finals[call_id] = fut
        assert self.transport is not None
        self.transport.sendto(req.encode(), ("127.0.0.1", kport))
        return fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _register(phone: Client, kport: int, user: str, password: str, domain: str = "127.0.0.1") -> int:
    """REGISTER with digest (MD5, qop=auth) as a softphone does; the final answer's code."""
    import hashlib

    call_id = uuid.uuid4().hex
    code, _ = await asyncio.wait_for(phone.send("REGISTER", kport, "", call_id=call_id, from_user=user,
                                                from_host=domain), 3)
    if code != 401:
        return code
    challenge = dict(re.findall(r'(\w+)="?([^",]+)"?', phone.answers[call_id].split("WWW-Authenticate:", 1)[1]
                                .split("\r\n", 1)[0]))
    phone.finals.pop(call_id)

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    uri = f"sip:127.0.0.1:{kport}"
    cnonce, nc = uuid.uuid4().hex[:8], "00000001"
    ha1, ha2 = md5(f"{user}:{challenge['realm']}:{password}"), md5(f"REGISTER:{uri}")
    response = md5(f"{ha1}:{challenge['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    auth = (f'Authorization: Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
            f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"')
    code, _ = await asyncio.wait_for(phone.send("REGISTER", kport, "", call_id=call_id, cseq=2, from_user=user,
                                                from_host=domain, extra=(auth, "Expires: 300")), 3)
    return code


@contextlib.asynccontextmanager
async def kamailio(tmp_path: Path, nodes: list[FakeNode]) -> AsyncIterator[int]:
    port = free_port()
    ds = tmp_path / "dispatcher.list"
    ds.write_text("".join(f"1 sip:127.0.0.1:{n.port} 0 0\n" for n in nodes))
    db = tmp_path / "dbtext"
    db.mkdir()
    (db / "version").write_text("table_name(str) table_version(int)\nsubscriber:7\nlocation:9\nversion:1\n")
    (db / "subscriber").write_text("id(int,auto) username(str) domain(str) password(str) ha1(str,null) ha1b(str,null)\n"
                                   "1:ana:127.0.0.1:secret:::\n")
    run = tmp_path / "run"
    run.mkdir()
    log = (tmp_path / "kamailio.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(KAMAILIO), "-f", str(REPO / "deploy/kamailio/dispatcher.cfg"), "-DD", "-E", "-w", str(tmp_path),
        "-Y", str(run), "-P", str(run / "kamailio.pid"), "-l", f"udp:127.0.0.1:{port}",
        "-A", f'DISPATCHER_LIST="{ds}"', "-A", f'DBURL="text://{db}"', "-A", 'CARRIER_NET="127.0.0.1/32"',
        "-A", f'CTL_SOCKET="unix:{run}/ctl"', stdout=log, stderr=log)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.close()


async def _call(carrier: Client, kport: int, within: float = 6.0) -> tuple[int, str, float]:
    t = time.monotonic()
    code, tag = await asyncio.wait_for(carrier.send("INVITE", kport), within)
    return code, tag, time.monotonic() - t


@NEEDS_KAMAILIO
@pytest.mark.e2e
@pytest.mark.anyio
async def test_dispatcher_spreads_fails_over_and_takes_dead_or_draining_nodes_out(tmp_path: Path) -> None:
    a, b = await FakeNode("a").start(), await FakeNode("b").start()
    carrier = await Client().start()
    abuser = await Client("127.0.0.3").start()
    phone = await Client("127.0.0.4").start()
    try:
        async with kamailio(tmp_path, [a, b]) as kport:
            for _ in range(100):  # Kamailio is up and has probed both nodes
                if a.probes and b.probes:
                    break
                await asyncio.sleep(0.1)
            assert a.probes and b.probes, (tmp_path / "kamailio.log").read_text()[-2000:]
            answered = [await _call(carrier, kport) for _ in range(4)]
            assert {tag for code, tag, _ in answered} == {"a", "b"} and all(c == 200 for c, _, _ in answered)

            # node A dies: calls sent to it move to B after the 2 s no-answer timer; then A is out altogether
            a.die()
            killed = time.monotonic()
            first = [await _call(carrier, kport) for _ in range(2)]
            assert all(code == 200 and tag == "b" for code, tag, _ in first), first
            out_within = None
            while time.monotonic() - killed < 20:  # a bound, not the figure: how fast is printed below
                code, tag, took = await _call(carrier, kport)
                assert (code, tag) == (200, "b")
                if took < 0.5:
                    streak = [await _call(carrier, kport) for _ in range(3)]
                    if all(s < 0.5 for _, _, s in streak):
                        out_within = time.monotonic() - killed
                        break
                await asyncio.sleep(0.3)
            assert out_within is not None, "node A was never taken out of the dispatcher"  # how fast: printed below

            # A comes back (two good probes: active again), then B drains (OPTIONS and INVITE 503): new calls go
            # to A only, and none is refused, even those sent to B before its probe failed (failover on 503)
            await a.start()
            back = time.monotonic()
            while time.monotonic() - back < 10:
                if "a" in {(await _call(carrier, kport))[1] for _ in range(2)}:
                    break
                await asyncio.sleep(0.3)
            else:
                raise AssertionError("node A never came back into rotation")
            b.draining = True
            drained = time.monotonic()
            tags: list[str] = []
            while time.monotonic() - drained < 10:
                code, tag, _ = await _call(carrier, kport)
                assert code == 200
                tags.append(tag)
                if tags[-4:] == ["a"] * 4:
                    break
                await asyncio.sleep(0.3)
            assert tags[-4:] == ["a"] * 4, tags

            # an agent's phone registers (digest); a node rings it through Kamailio; a stranger may not
            assert await _register(phone, kport, "ana", "secret") == 200
            a.ring(kport, "ana")
            for _ in range(50):
                if phone.requests:
                    break
                await asyncio.sleep(0.05)
            assert phone.requests and phone.requests[0].startswith("INVITE sip:ana@127.0.0.4"), phone.requests
            assert "Record-Route:" in phone.requests[0]
            assert (await asyncio.wait_for(abuser.send("INVITE", kport, "ana"), 2))[0] == 403

            # an address that is neither the carrier nor a node, flooding REGISTER: banned, then ignored
            codes = []
            for _ in range(12):
                with contextlib.suppress(TimeoutError):
                    codes.append((await asyncio.wait_for(abuser.send("REGISTER", kport, "ana"), 1.0))[0])
            assert codes[:10] == [401] * 10, codes
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(abuser.send("OPTIONS", kport, ""), 1.0)
            assert (await _call(carrier, kport))[0] == 200  # the carrier is not affected
            print(f"\ndispatcher: failover {max(s for _, _, s in first):.2f} s, dead node out of rotation "
                  f"{out_within:.1f} s after it died, draining node out within {time.monotonic() - drained:.1f} s")
    finally:
        carrier.close()
        abuser.close()
        phone.close()
        a.die()
        b.die()


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", ["atiende.service", "kamailio-atiende.service", "redis-atiende.service",
                                  "redis-sentinel-atiende.service"])
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    """systemd's own parser; programs that only exist on a deployed machine (/srv/atiende/.venv) are not errors."""
    r = subprocess.run([str(SYSTEMD_ANALYZE), "verify", str(REPO / "deploy" / "systemd" / unit)],
                       capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if line.strip() and "is not executable" not in line and "/srv/atiende" not in line]
    assert not problems, problems
