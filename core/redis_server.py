"""A private redis-server child for `atiende run` when ATIENDE_REDIS_URL is not set.

It is supervised (`supervise()`): a redis-server that dies (OOM killer, SIGKILL, crash) is started again on the same
port and data directory, which replays the AOF, and the caller learns of it (`is_up`, `on_state`) so /healthz can
say not-ready meanwhile. It requires a password generated per PrivateRedis (security issue 16.10: any local user
could otherwise read and write every ticket on the loopback port); the URL it hands out carries it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

log = logging.getLogger("atiende.redis")


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
    """redis-server bound to loopback on a free port, AOF on with fsync on every write, a random password.

    `appendfsync always` is what makes "a ticket creation that returned 2xx survives a Redis crash" true; the cost
    was measured in bench/ (see README). `password=""` turns the password off (a throwaway test server).
    """

    RESTART_BACKOFF: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)  # seconds before restart n; the last repeats

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int | None = None,
                 password: str | None = None) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port(host)
        # One password for the object's life: restarts keep it, so clients holding the URL reconnect unchanged.
        self.password = secrets.token_urlsafe(24) if password is None else password
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.on_state: Callable[[bool], object] | None = None
        self._up = threading.Event()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()  # start/stop against the supervisor's restarts

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def is_up(self) -> bool:
        """False from the moment a supervised redis-server is found dead until its restart answers PING."""
        return self._up.is_set()

    def _config(self, pidfile: Path) -> Path:
        """The password goes in a 0600 file, not on the command line, where every local user can read it."""
        conf = self.data_dir.resolve() / "redis.conf"
        lines = [
            f"bind {self.host}",
            f"port {self.port}",
            f'dir "{self.data_dir.resolve()}"',
            "appendonly yes",
            "appendfsync always",
            'save ""',
            "daemonize no",
            f'pidfile "{pidfile}"',
            "protected-mode yes",
            "loglevel warning",
            f'logfile "{(self.data_dir / "redis.log").resolve()}"',
        ]
        if self.password:
            lines.append(f"requirepass {self.password}")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(conf, 0o600)  # an older file may have been created with wider rights
        return conf

    def _spawn(self, exe: str) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pidfile = (self.data_dir / "redis.pid").resolve()
        _stop_stale(pidfile)
        args = [exe, str(self._config(pidfile))]
        # PDEATHSIG: Redis flushes its AOF and exits when we die, even by SIGKILL. setpriv sets it at exec time, so
        # a restart from the supervisor thread needs no preexec_fn (unsafe once threads exist); the signal follows
        # the thread that forked, and both the caller's and the supervisor live as long as the server should.
        setpriv = shutil.which("setpriv")
        preexec: Callable[[], None] | None = None
        if setpriv:
            args = [setpriv, "--pdeathsig", "SIGTERM", *args]
        elif threading.active_count() == 1:
            preexec = _die_with_parent
        # start_new_session: Ctrl-C in the terminal reaches us, not Redis; we stop it in order.
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=preexec)

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=self.host, port=self.port, password=self.password or None,
                             socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    log_file = self.data_dir / "redis.log"
                    err = log_file.read_text(errors="replace")[-500:] if log_file.exists() else ""
                    raise RedisUnavailable(f"redis-server exited at start (code {proc.returncode}): {err.strip()}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise RedisUnavailable(f"redis-server did not answer on {self.host}:{self.port} within {timeout:.0f} s")

    def start(self, timeout: float = 10.0) -> str:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RedisUnavailable(
                "redis-server is not installed: run `make run` (it installs it with apt-get) "
                "or set ATIENDE_REDIS_URL to a Redis server you run"
            )
        with self._lock:
            self._stopping.clear()
            self.proc = self._spawn(exe)
            try:
                self._wait_ready(self.proc, timeout)
            except RedisUnavailable:
                self._kill(self.proc)
                raise
            self._up.set()
        return self.url

    def supervise(self, on_state: Callable[[bool], object] | None = None) -> None:
        """Watch the started server from a thread; when it dies without stop(), start it again on the same port and
        directory (backoff RESTART_BACKOFF, without end: the service is useless without it). `on_state(False)` when
        it is found dead, `on_state(True)` once it answers again; it runs in the supervisor thread, so an asyncio
        caller passes something like `lambda up: loop.call_soon_threadsafe(event.set if up else event.clear)`."""
        if on_state is not None:
            self.on_state = on_state
        if self._supervisor is None or not self._supervisor.is_alive():
            self._supervisor = threading.Thread(target=self._watch, name="redis-supervisor", daemon=True)
            self._supervisor.start()

    def _notify(self, up: bool) -> None:
        if self.on_state is not None:
            try:
                self.on_state(up)
            except Exception:
                log.exception("redis state callback failed")

    def _watch(self) -> None:
        exe = shutil.which("redis-server") or "redis-server"
        failures = 0
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            code = proc.wait()  # also reaps it: no zombie left behind
            if self._stopping.is_set():
                return
            with self._lock:
                if self._stopping.is_set() or self.proc is not proc:
                    continue  # stop() or a manual start() got there first
                if self._up.is_set():
                    self._up.clear()
                    log.error("private redis-server died (code %s): restarting it on the same port and data", code)
                    self._notify(False)
            delay = self.RESTART_BACKOFF[min(failures, len(self.RESTART_BACKOFF) - 1)]
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self.proc = self._spawn(exe)
                    self._wait_ready(self.proc, 30.0)
                except (RedisUnavailable, OSError) as exc:
                    failures += 1
                    log.error("private redis-server restart %d failed: %s", failures, exc)
                    if self.proc is not None:
                        self._kill(self.proc)
                    continue
                failures = 0
                self.restarts += 1
                self._up.set()
            log.warning("private redis-server restarted", extra={"restarts": self.restarts})
            self._notify(True)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            self._up.clear()
            proc = self.proc
            if proc is not None and proc.poll() is None:
                proc.terminate()  # SIGTERM: Redis flushes the AOF and exits
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        sup = self._supervisor
        if sup is not None and sup is not threading.current_thread():
            sup.join(timeout)
        self._supervisor = None


def check_url(url: str, timeout: float = 2.0, password: str | None = None) -> None:
    """`password`: redis.password when the URL carries none (it comes from the environment, not the URL)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                  **({"password": password} if password else {}))
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        raise RedisUnavailable(f"Redis at {url} does not answer: {exc}") from None
    finally:
        client.close()


def running_url(data_dir: Path, host: str = "127.0.0.1") -> str | None:
    """The URL of the private redis-server a running `atiende run` started on this data directory, read from its
    0600 redis.conf: only the service's own user (or root) can use the CLI against it. None when there is none."""
    conf = data_dir / "redis.conf"
    try:
        lines = conf.read_text().splitlines()
    except OSError:
        return None
    values = dict(line.split(" ", 1) for line in lines if " " in line)
    port, password = values.get("port"), values.get("requirepass")
    if not port:
        return None
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"
