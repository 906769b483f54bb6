"""Real Redis replication on loopback for tests and benches: a primary, replicas and Sentinels as child processes
in a temporary directory, on free ports, all with one password (as in deploy/redis/)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.redis_server import free_port


def redis_server_exe() -> str | None:
    return shutil.which("redis-server")


class RedisHA:
    """`replicas` replicas of one primary; `sentinels` Sentinels (redis-server --sentinel) watching it as `service`.

    Short down-after/failover timeouts so a test sees a failover within a few seconds."""

    def __init__(self, root: Path, *, replicas: int = 1, sentinels: int = 3, service: str = "atiende",
                 password: str = "ha-test-secret", down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 appendfsync: str = "everysec") -> None:
        self.root = root
        self.service = service
        self.password = password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.appendfsync = appendfsync
        self.data_ports = [free_port() for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.sentinel_ports]

    def url(self, port: int) -> str:
        return f"redis://:{self.password}@127.0.0.1:{port}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=2,
                           socket_connect_timeout=0.5, decode_responses=True)

    def _spawn(self, port: int, conf: str, *extra: str) -> None:
        d = self.root / str(port)
        d.mkdir(parents=True, exist_ok=True)
        path = d / "redis.conf"
        path.write_text(conf.replace("@DIR@", str(d)))
        os.chmod(path, 0o600)
        exe = redis_server_exe()
        assert exe, "redis-server is not installed"
        self.procs[port] = subprocess.Popen([exe, str(path), *extra], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True)

    def _data_conf(self, port: int, primary: int | None) -> str:
        lines = [f"port {port}", "bind 127.0.0.1", 'dir "@DIR@"', "appendonly yes", f"appendfsync {self.appendfsync}",
                 'save ""', "daemonize no", "loglevel warning", 'logfile "@DIR@/redis.log"',
                 f"requirepass {self.password}", f"masterauth {self.password}",
                 "repl-diskless-sync yes", "repl-diskless-sync-delay 0"]
        if primary is not None:
            lines.append(f"replicaof 127.0.0.1 {primary}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> None:
        primary = self.data_ports[0]
        for i, port in enumerate(self.data_ports):
            self._spawn(port, self._data_conf(port, None if i == 0 else primary))
        deadline = time.monotonic() + timeout
        self._wait_replicas(primary, len(self.data_ports) - 1, deadline)
        for port in self.sentinel_ports:
            self._spawn_sentinel(port, primary)
        # The Sentinels must know each other (hello messages every 2 s) before one can be elected to fail over.
        respawns = 0
        while time.monotonic() < deadline:
            for i, port in enumerate(self.sentinel_ports):
                if self.procs[port].poll() is not None and respawns < 3:
                    # It exited: most likely its free port was taken meanwhile (other tests run beside this one).
                    respawns += 1
                    self.sentinel_ports[i] = free_port()
                    self._spawn_sentinel(self.sentinel_ports[i], primary)
            if all(self._sentinel_peers(p) >= len(self.sentinel_ports) - 1 for p in self.sentinel_ports):
                return
            time.sleep(0.1)
        state = [(p, self.procs[p].poll(), self._sentinel_peers(p), self._log_tail(p)) for p in self.sentinel_ports]
        raise RuntimeError(f"the sentinels did not discover each other in time: (port, exit code, peers, log) {state}")

    def _spawn_sentinel(self, port: int, primary: int) -> None:
        conf = "\n".join([
            f"port {port}", "bind 127.0.0.1", 'dir "@DIR@"', "daemonize no", "loglevel warning",
            'logfile "@DIR@/sentinel.log"',
            f"sentinel monitor {self.service} 127.0.0.1 {primary} 2",
            f"sentinel auth-pass {self.service} {self.password}",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 1",
        ]) + "\n"
        self._spawn(port, conf, "--sentinel")

    def _log_tail(self, port: int) -> str:
        for name in ("sentinel.log", "redis.log"):
            path = self.root / str(port) / name
            if path.exists():
                return " | ".join(path.read_text(errors="replace").splitlines()[-3:])
        return ""

    def _wait_replicas(self, primary: int, n: int, deadline: float) -> None:
        c = self.client(primary)
        try:
            while time.monotonic() < deadline:
                try:
                    info = c.info("replication")
                    online = sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                                 and v.get("state") == "online")
                    if online >= n:
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.05)
        finally:
            c.close()
        raise RuntimeError(f"{n} replicas did not come online")

    @staticmethod
    def _sentinel(port: int) -> redis.Redis:
        """A client for one look at a Sentinel: no retries (redis-py's default spends ~4 s on a dead port)."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=0.5,
                           retry=Retry(NoBackoff(), 0))

    def _sentinel_peers(self, port: int) -> int:
        c = self._sentinel(port)
        try:
            state = c.sentinel_master(self.service)
            return int(state["num-other-sentinels"]) if isinstance(state, dict) else -1
        except (redis.RedisError, KeyError):
            return -1
        finally:
            c.close()

    def primary_port(self) -> int | None:
        """The primary as the Sentinels see it (the first that answers)."""
        for port in self.sentinel_ports:
            c = self._sentinel(port)
            try:
                host_port = c.sentinel_get_master_addr_by_name(self.service)
                if isinstance(host_port, tuple | list):
                    return int(host_port[1])
            except redis.RedisError:
                continue
            finally:
                c.close()
        return None

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
