"""A private redis-server child for `atiende run` when ATIENDE_REDIS_URL is not set."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, even by SIGKILL (Linux prctl).

    Redis then flushes its AOF and exits instead of lingering on a port nobody knows.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_stale(pidfile: Path) -> None:
    """A redis-server left on our data directory by a crashed run would share its AOF: stop it first."""
    import os
    import signal

    try:
        pid = int(pidfile.read_text().strip())
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"redis-server" not in cmd:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class RedisUnavailable(RuntimeError):
    """Raised with a message meant for a person, not a traceback."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """redis-server bound to loopback on a free port, AOF on with fsync on every write.

    `appendfsync always` is what makes "a ticket creation that returned 2xx survives a
    Redis crash" true; the cost was measured in bench/ (see README).
    """

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisUnavailable(
                "redis-server is not installed: run `make run` (it installs it with apt-get) "
                "or set ATIENDE_REDIS_URL to a Redis server you run"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pidfile = (self.data_dir / "redis.pid").resolve()
        _stop_stale(pidfile)
        args = [
            exe,
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--pidfile", str(pidfile),
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]
        # start_new_session: Ctrl-C in the terminal reaches us, not Redis; we stop it in order.
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_die_with_parent)  # before any thread exists in `atiende run`
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    log_file = self.data_dir / "redis.log"
                    err = log_file.read_text(errors="replace")[-500:] if log_file.exists() else ""
                    raise RedisUnavailable(f"redis-server exited at start (code {self.proc.returncode}): {err.strip()}")
                try:
                    if client.ping():
                        return self.url
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer on {self.url} within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: Redis flushes the AOF and exits
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def check_url(url: str, timeout: float = 2.0) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        raise RedisUnavailable(f"Redis at {url} does not answer: {exc}") from None
    finally:
        client.close()
