"""Real SIP clients in a private network namespace, for end-to-end tests and benches.

Why a namespace: SIP clients put their host's address in Contact and SDP; in a namespace that only has
`lo`, every party (baresip, linphonec, Kamailio, the Atiende endpoint) can only see 127.0.0.1, so calls
work the same on any machine, and nothing leaves the box.

Pieces (all usable from pytest fixtures at the bottom, or directly from `bench/`):

- `NetNs`: `ip netns add atiende-<random>` with `lo` up; `spawn()` runs a program inside (`ip netns exec`),
  `entered()` moves the calling *thread* into the namespace (so an in-process `SipEndpoint` binds there),
  `socket()`/`connect()` make sockets inside, `forward_in()`/`forward_out()` relay TCP ports across
  (e.g. the test session's Redis into the namespace, the service's HTTP port out of it). `close()` kills
  every process it started and deletes the namespace, also on failure.
- `Baresip`: baresip 1.0 driven through `ctrl_tcp` (dial, hang up, events) and `cons` (DTMF keys), with
  `aufile` as microphone (a WAV, padded: baresip 1.0 hangs up when it ends), `sndfile` recording what it
  hears, `aubridge` as player (`alsa,null` would burn a whole core). One config dir per instance.
- `Linphonec`: linphonec driven on stdin, `soundcard use files`, `play`/`record` WAVs, DTMF by typing digits
  (RFC 4733 or SIP INFO depending on `dtmf="info"`).
- `Kamailio`: the repo's `deploy/kamailio/kamailio.cfg` with a db_text user table written per instance.
- Audio: `espeak_wav`, `tone_wav`, `pad_wav`, `read_wav`, `wav_frames`, `correlate` (normalised
  cross-correlation plus SNR after alignment).
- `RtpCapture`: dumpcap on the namespace's `lo`, parsed in Python into per-stream RTP timing (gaps, drift).

Everything a test starts is bounded by timeouts; nothing waits forever.

Test modules use the fixtures with `pytest_plugins = ["tests.sip_harness"]` (and may import names from
here too: PYTEST_DONT_REWRITE keeps pytest from warning that the plugin was imported first).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
Socket = socket.socket

REPO = Path(__file__).resolve().parent.parent
KAMAILIO_CFG = REPO / "deploy" / "kamailio" / "kamailio.cfg"
RATE = 8000
FRAME_BYTES = 320  # 20 ms of 16-bit mono at 8 kHz

PORT_BASE, PORT_LIMIT = 10000, 19999  # what NetNs.ports() hands out
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class HarnessError(RuntimeError):
    """A real client or the namespace did not do what the test needed (with the log tail when useful)."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _thread_ns_fd() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY)


def _in_ns(fd: int, fn: Callable[[], T]) -> T:
    """Run fn in a short-lived thread switched into the namespace `fd` (the caller's thread never moves)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            _setns(fd)
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, name="netns-socket", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


_NETNS_REASON: list[str | None] = []


def netns_unavailable() -> str | None:
    """Why network namespaces can't be used here (None if they can); probed once per process."""
    if not _NETNS_REASON:
        reason: str | None = None
        if os.geteuid() != 0:
            reason = "end-to-end SIP tests need root for `ip netns` (network namespaces)"
        elif shutil.which("ip") is None:
            reason = "`ip` (iproute2) is not installed"
        else:
            name = f"atiende-probe-{secrets.token_hex(3)}"
            r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                reason = f"`ip netns add` failed: {r.stderr.strip()}"
            else:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        _NETNS_REASON.append(reason)
    return _NETNS_REASON[0]


def require_programs(*names: str) -> str | None:
    missing = [n for n in names if shutil.which(n) is None and not Path("/usr/sbin", n).exists()]
    return f"missing programs: {', '.join(missing)} (Debian packages: see tests/sip_harness.py)" if missing else None


# --------------------------------------------------------------------------------------------------
# Processes and the namespace


@dataclass
class Proc:
    """A process started inside a namespace; its output goes to `log` (read it on failure)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace")
        # baresip repaints a status line with \r; keep the log readable
        text = re.sub(r"\[\d+:\d\d:\d\d\] audio=\d+/\d+ \(bit/s\)\s*", "", text)
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 3.0) -> int | None:
        """SIGTERM its process group, then SIGKILL after `timeout`; returns the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return self.popen.returncode


class _Forward:
    """Relays TCP connections accepted on `listener` to sockets made by `dial()` (threads; test-sized traffic)."""

    def __init__(self, listener: socket.socket, dial: Callable[[], socket.socket]) -> None:
        self.listener = listener
        self.port: int = listener.getsockname()[1]
        self._dial = dial
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name=f"forward-{self.port}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                up = self._dial()
            except OSError:
                conn.close()
                continue
            self._socks += [conn, up]
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(2)
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


class NetNs:
    """A network namespace with only `lo`, and every process started in it.

    Create it from a thread that is in the normal namespace (it remembers that one as "outside").
    """

    def __init__(self, prefix: str = "atiende", workdir: Path | None = None) -> None:
        self.name = f"{prefix}-{secrets.token_hex(4)}"
        self.workdir = workdir
        self.procs: list[Proc] = []
        self._forwards: list[_Forward] = []
        self._fd: int | None = None
        self._outside_fd: int | None = None
        self._next_port = PORT_BASE

    # lifecycle
    def open(self) -> NetNs:
        reason = netns_unavailable()
        if reason:
            raise HarnessError(reason)
        self._outside_fd = _thread_ns_fd()
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True, timeout=10)
        try:
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=10)
            self._fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        for fwd in self._forwards:
            fwd.close()
        self._forwards.clear()
        for attr in ("_fd", "_outside_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)

    def __enter__(self) -> NetNs:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise HarnessError("namespace not open")
        return self._fd

    def ports(self, count: int = 1, align: int = 10) -> int:
        """A block of `count` ports nobody else in this namespace got: 10000-19999, clear of Atiende's default RTP
        range (20000-20999) and of the kernel's ephemeral ports (32768+), which any socket may grab."""
        base = self._next_port
        self._next_port += max(count, align) + (-max(count, align)) % align
        if self._next_port > PORT_LIMIT:
            raise HarnessError("out of ports in the namespace (call reset_ports() once earlier clients are gone)")
        return base

    def reset_ports(self) -> None:
        """Hand out ports from the start again (every client that used them must be stopped)."""
        self._next_port = PORT_BASE

    # processes
    def cmd(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(argv), capture_output=True, text=True, timeout=timeout, **kw)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log: Path | None = None,
        stdin: int | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        capture: bool = False,
    ) -> Proc:
        """Start argv inside the namespace, in its own process group; output to `log`, a pipe or nowhere."""
        out: Any = subprocess.PIPE if capture else subprocess.DEVNULL
        if log is not None and not capture:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = log.open("wb")
        try:
            popen = subprocess.Popen(
                self.cmd(argv), stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True,
            )
        finally:
            if log is not None and not capture:
                out.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def forget(self, proc: Proc) -> None:
        proc.stop()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)

    # sockets
    @contextlib.contextmanager
    def entered(self) -> Iterator[NetNs]:
        """Move the calling thread into the namespace (sockets it creates live there), and back afterwards."""
        back = _thread_ns_fd()
        try:
            _setns(self.fd)
            yield self
        finally:
            _setns(back)
            os.close(back)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> Socket:
        return _in_ns(self.fd, lambda: socket.socket(family, type))

    def connect(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> Socket:
        """A TCP connection inside the namespace, retried until the listener is up or `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.socket()
            try:
                s.settimeout(2.0)
                s.connect((host, port))
                s.settimeout(None)
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def forward_in(self, port: int, host: str = "127.0.0.1") -> int:
        """Make the outside `host:port` (e.g. the test Redis) reachable at the same address inside."""
        def listen() -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(64)
            return s

        outside = self._outside_fd
        assert outside is not None

        def dial() -> socket.socket:
            s = _in_ns(outside, socket.socket)
            try:
                s.connect((host, port))
            except OSError:
                s.close()  # the far end is gone (a killed Redis primary): no socket left for the GC to find
                raise
            return s

        self._forwards.append(_Forward(_in_ns(self.fd, listen), dial))
        return port

    def forward_out(self, port: int, host: str = "127.0.0.1") -> int:
        """Make `host:port` inside (e.g. the service's HTTP API) reachable outside; returns the outside port."""
        assert self._outside_fd is not None
        listener = _in_ns(self._outside_fd, socket.socket)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        fwd = _Forward(listener, lambda: self.connect(port, host, timeout=2.0))
        self._forwards.append(fwd)
        return fwd.port


# --------------------------------------------------------------------------------------------------
# Audio


def _check(argv: Sequence[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise HarnessError(f"{argv[0]} failed: {r.stderr.strip()[-500:]}")


def espeak_wav(text: str, path: Path, voice: str = "es", speed: int = 150) -> Path:
    """Spanish speech from espeak-ng, as 8 kHz 16-bit mono WAV (what a G.711 call carries)."""
    raw = path.with_suffix(".raw.wav")
    _check(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text])
    _check(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(path), "norm", "-3"])
    raw.unlink()
    return path


def tone_wav(path: Path, seconds: float, freq: float = 440.0, volume: float = 0.5) -> Path:
    _check(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(path), "synth", str(seconds), "sine", str(freq),
            "vol", str(volume)])
    return path


def pad_wav(src: Path, dst: Path, before: float = 0.0, after: float = 60.0) -> Path:
    """Silence around a WAV: baresip 1.0 hangs up the call when its `aufile` source ends."""
    _check(["sox", str(src), str(dst), "pad", str(before), str(after)])
    return dst


def read_wav(path: Path) -> np.ndarray:
    """Mono 16-bit samples; tolerates a header whose sizes were never finalised (still being written)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise HarnessError(f"{path}: expected 16-bit samples, got {8 * w.getsampwidth()}-bit")
        channels, rate = w.getnchannels(), w.getframerate()
        data = w.readframes(w.getnframes())
    if not data and path.stat().st_size > 44:
        data = path.read_bytes()[44:]
    samples = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels)[:, 0]
    if rate != RATE:
        raise HarnessError(f"{path}: expected {RATE} Hz, got {rate}")
    return samples.copy()


def write_wav(path: Path, samples: np.ndarray | bytes) -> Path:
    data = samples if isinstance(samples, bytes) else np.asarray(samples, dtype="<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(data)
    return path


def wav_frames(path: Path) -> list[bytes]:
    """20 ms frames (320 bytes, the `Call.play()` format), the last one zero-padded."""
    data = read_wav(path).tobytes()
    data += b"\0" * (-len(data) % FRAME_BYTES)
    return [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


@dataclass
class AudioMatch:
    score: float  # normalised cross-correlation at the best lag, 0..1 (1 = same waveform up to gain)
    lag_s: float  # where the reference starts in what was heard
    snr_db: float  # reference vs. residual after alignment and gain: G.711 both ways gives 25-35 dB
    gain: float

    def __str__(self) -> str:
        return f"score={self.score:.3f} lag={self.lag_s:.3f}s snr={self.snr_db:.1f}dB gain={self.gain:.2f}"


def correlate(reference: np.ndarray, heard: np.ndarray, rate: int = RATE) -> AudioMatch:
    """Find `reference` inside `heard` (FFT cross-correlation normalised by the local energy of `heard`)."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(heard, dtype=np.float64)
    if len(ref) == 0 or not np.any(ref):
        raise HarnessError("reference audio is empty or silent")
    # The reference may hang over either end of what was heard (recording started late, call cut short):
    # zero-pad so partial overlaps are scored too (a perfect half overlap scores about 0.7).
    pad = np.zeros(len(ref))
    got = np.concatenate([pad, got, pad])
    n = 1 << int(np.ceil(np.log2(len(got) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(got, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(got) - len(ref) + 1]
    csum = np.concatenate([[0.0], np.cumsum(got * got)])
    energy = csum[len(ref):] - csum[: len(got) - len(ref) + 1]
    ref_norm = float(np.sqrt(np.dot(ref, ref)))
    norm = np.abs(corr) / (ref_norm * np.sqrt(np.maximum(energy, 1e-9)))
    norm[energy < 1e-6 * ref_norm**2] = 0.0  # silence can't match
    lag = int(np.argmax(norm))
    # SNR over the overlapping part only (the padding is not "heard")
    lo, hi = max(lag, len(ref)), min(lag + len(ref), len(got) - len(ref))
    seg, part = got[lo:hi], ref[lo - lag : hi - lag]
    part_power = float(np.dot(part, part))
    gain = float(np.dot(seg, part) / part_power) if part_power > 0 else 0.0
    residual = seg - gain * part
    signal_power = gain * gain * part_power
    snr = 10 * np.log10(signal_power / max(float(np.dot(residual, residual)), 1e-9)) if signal_power > 0 else -99.0
    return AudioMatch(score=float(norm[lag]), lag_s=(lag - len(ref)) / rate, snr_db=float(snr), gain=gain)


@dataclass
class ChunkMatch:
    """`reference` cut in chunks, each found in what was heard: robust to a receiver that shifts playout
    (linphone's jitter buffer moves by 10 ms steps), where one whole-signal correlation would drop."""

    chunks: list[AudioMatch]

    @property
    def median_score(self) -> float:
        return float(np.median([c.score for c in self.chunks])) if self.chunks else 0.0

    @property
    def median_snr_db(self) -> float:
        return float(np.median([c.snr_db for c in self.chunks])) if self.chunks else -99.0

    def fraction_above(self, score: float) -> float:
        return sum(1 for c in self.chunks if c.score > score) / len(self.chunks) if self.chunks else 0.0

    @property
    def lag_spread_s(self) -> float:
        lags = [c.lag_s for c in self.chunks]
        return float(max(lags) - min(lags)) if lags else 0.0

    def __str__(self) -> str:
        return (f"{len(self.chunks)} chunks: median score={self.median_score:.3f} snr={self.median_snr_db:.1f}dB "
                f"lag spread={1000 * self.lag_spread_s:.0f}ms")


def correlate_chunks(reference: np.ndarray, heard: np.ndarray, chunk_s: float = 0.5, rate: int = RATE) -> ChunkMatch:
    """Correlate each non-silent `chunk_s` piece of `reference` with `heard`, searching only near the whole
    reference's best alignment (chunks of speech look alike; a far-away match would be a false one)."""
    whole = correlate(reference, heard, rate)
    n = int(chunk_s * rate)
    loud = 0.05 * float(np.sqrt(np.mean(np.asarray(reference, dtype=np.float64) ** 2)))
    out: list[AudioMatch] = []
    for start in range(0, len(reference) - n + 1, n):
        piece = reference[start : start + n]
        if float(np.sqrt(np.mean(np.asarray(piece, dtype=np.float64) ** 2))) < loud:
            continue
        at = round(whole.lag_s * rate) + start
        lo, hi = max(at - n, 0), max(min(at + 2 * n, len(heard)), 0)
        window = heard[lo:hi]
        m = correlate(piece, window, rate)
        out.append(AudioMatch(m.score, m.lag_s + (lo - start) / rate, m.snr_db, m.gain))
    return ChunkMatch(out)


def rms_dbfs(samples: np.ndarray) -> float:
    x = np.asarray(samples, dtype=np.float64)
    if len(x) == 0:
        return -120.0
    return float(20 * np.log10(max(np.sqrt(np.mean(x * x)) / 32768.0, 1e-6)))


# --------------------------------------------------------------------------------------------------
# baresip


def _netstring(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj).encode()
    return str(len(body)).encode() + b":" + body + b","


class Baresip:
    """One baresip 1.0 instance in the namespace, driven through ctrl_tcp (JSON netstrings) and cons (keys).

    `user@127.0.0.1:sip_port` is its address. With `answer="auto"` it answers calls (e.g. Atiende dialling out).
    `auth=(user, password)` + `outbound=sip:proxy` route calls through a proxy (Kamailio) with digest auth;
    `register=True` also registers there (then others reach it as `sip:user@127.0.0.1` through the proxy).
    `codecs=["PCMA"]` restricts the offer. `record=True` loads `sndfile`: what it hears goes to
    `<workdir>/rec/dump-*-dec.wav` (one per call; read it after the call closed).
    """

    def __init__(
        self,
        ns: NetNs,
        workdir: Path,
        *,
        wav: Path | None = None,
        user: str = "caller",
        answer: str = "manual",
        record: bool = True,
        codecs: Sequence[str] | None = None,
        auth: tuple[str, str] | None = None,
        outbound: str | None = None,
        register: bool = False,
        max_calls: int = 4,
        rtp_ports: int = 40,
        log: bool = True,
    ) -> None:
        self.ns, self.workdir, self.user = ns, workdir, user
        base = ns.ports(10)
        self.sip_port, self.ctrl_port, self.cons_port = base, base + 4, base + 5  # base+1 is taken by SIP/TLS
        self.rtp_base = ns.ports(rtp_ports)
        self.rtp_count = rtp_ports
        self.wav, self.answer, self.record, self.codecs = wav, answer, record, codecs
        self.auth, self.outbound, self.max_calls, self._log = auth, outbound, max_calls, log
        self.register = register
        self.rec_dir = workdir / "rec"
        self.proc: Proc | None = None
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._cons: socket.socket | None = None
        self._token = 0

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rec_dir.mkdir(exist_ok=True)
        source = f"aufile,{self.wav}" if self.wav else "ausine,440"
        modules = ["g711.so", "aufile.so", "aubridge.so", "cons.so"] + (["sndfile.so"] if self.record else [])
        if not self.wav:
            modules.append("ausine.so")
        lines = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t127.0.0.1:{self.sip_port}",
            "call_local_timeout\t120",
            f"call_max_calls\t\t{self.max_calls}",
            f"audio_source\t\t{source}",
            "audio_player\t\taubridge,atiende-null",
            "audio_alert\t\taubridge,atiende-null",
            "ausrc_srate\t\t8000",
            "auplay_srate\t\t8000",
            "ausrc_channels\t\t1",
            "auplay_channels\t\t1",
            f"rtp_ports\t\t{self.rtp_base}-{self.rtp_base + self.rtp_count - 1}",
            "rtp_timeout\t\t0",
            "module_path\t\t/usr/lib/baresip/modules",
            *[f"module\t\t\t{m}" for m in modules],
            "module_app\t\taccount.so",
            "module_app\t\tmenu.so",
            "module_app\t\tctrl_tcp.so",
            f"ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}",
            f"cons_listen\t\t127.0.0.1:{self.cons_port}",
            f"snd_path\t\t{self.rec_dir}",
        ]
        (self.workdir / "config").write_text("\n".join(lines) + "\n")
        params = [f"answermode={self.answer}", f"regint={300 if self.register else 0}"]
        if self.codecs:
            params.append("audio_codecs=" + ",".join(self.codecs))
        if self.auth:
            params.append(f"auth_user={self.auth[0]}")
            params.append(f"auth_pass={self.auth[1]}")
        if self.outbound:
            params.append(f"outbound={self.outbound}")
        host = "127.0.0.1" if self.outbound else f"127.0.0.1:{self.sip_port}"
        (self.workdir / "accounts").write_text(f"<sip:{self.user}@{host}>;" + ";".join(params) + "\n")

    async def start(self, within: float = 10.0) -> Baresip:
        self._write_config()
        self.proc = self.ns.spawn(
            ["baresip", "-n", "127.0.0.1", "-f", str(self.workdir)],
            name=f"baresip-{self.user}", log=self.workdir / "baresip.log" if self._log else None,
        )
        self._changed = asyncio.Event()
        try:
            sock = await asyncio.to_thread(self.ns.connect, self.ctrl_port, "127.0.0.1", within)
        except OSError as exc:
            raise HarnessError(f"baresip did not open ctrl_tcp: {exc}\n{self.proc.tail()}") from exc
        reader, self._writer = await asyncio.open_connection(sock=sock)
        self._reader = asyncio.create_task(self._read(reader))
        self._cons = self.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                head = await reader.readuntil(b":")
                body = await reader.readexactly(int(head[:-1]))
                await reader.readexactly(1)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                break
            msg = json.loads(body)
            if msg.get("response") and msg.get("token") in self._responses:
                fut = self._responses.pop(msg["token"])
                if not fut.done():
                    fut.set_result(msg)
            elif msg.get("event"):
                self.events.append(msg)
            assert self._changed is not None
            self._changed.set()

    async def command(self, command: str, params: str = "", within: float = 5.0) -> dict[str, Any]:
        if self._writer is None:
            raise HarnessError("baresip not started")
        self._token += 1
        token = f"t{self._token}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = fut
        self._writer.write(_netstring({"command": command, "params": params, "token": token}))
        await self._writer.drain()
        try:
            return await asyncio.wait_for(fut, within)
        except TimeoutError as exc:
            raise HarnessError(f"baresip: no response to {command} {params}\n{self.tail()}") from exc

    async def dial(self, uri: str) -> None:
        reply = await self.command("dial", uri)
        if not reply.get("ok"):
            raise HarnessError(f"baresip dial {uri} failed: {reply}\n{self.tail()}")

    async def hangup(self) -> None:
        await self.command("hangup")

    async def accept(self) -> None:
        await self.command("accept")

    async def wait_registered(self, within: float = 10.0) -> None:
        """Poll `/reginfo` (REGISTER_OK may fire before ctrl_tcp is connected, so events can't be trusted)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            reply = await self.command("reginfo")
            if re.search(r"\bOK\b", re.sub(r"\x1b\[[0-9;]*m", "", str(reply.get("data", "")))):
                return
            await asyncio.sleep(0.1)
        raise HarnessError(f"baresip {self.user} did not register within {within}s\n{self.tail()}")

    def keys(self, keys: str) -> None:
        """Type keys on the console (`cons` module): digits during a call are sent as RFC 4733 DTMF."""
        if self._cons is None:
            raise HarnessError("baresip not started")
        for key in keys:
            self._cons.sendto(key.encode(), ("127.0.0.1", self.cons_port))

    async def send_dtmf(self, digits: str, gap: float = 0.3, length: float = 0.12) -> None:
        """RFC 4733 digits: key press, `length` s of tone, key release (0x04, or the tone lasts until the next)."""
        for d in digits:
            self.keys(d)
            await asyncio.sleep(length)
            self.keys("\x04")
            await asyncio.sleep(gap)

    async def wait_event(
        self, *types: str, within: float = 10.0, start: int = 0, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The first event (from index `start`) whose type is one of `types`; HarnessError after `within`."""
        assert self._changed is not None
        deadline = asyncio.get_running_loop().time() + within
        while True:
            for ev in self.events[start:]:
                if ev.get("type") in types and (where is None or where(ev)):
                    return ev
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                seen = [e.get("type") for e in self.events[start:]]
                raise HarnessError(f"baresip {self.user}: no {types} within {within}s (events: {seen})\n{self.tail()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def count(self, type_: str) -> int:
        return sum(1 for e in self.events if e.get("type") == type_)

    def recordings(self) -> list[Path]:
        return sorted(self.rec_dir.glob("dump-*-dec.wav"))

    def tail(self) -> str:
        return self.proc.tail() if self.proc else ""

    async def stop(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.command("quit", within=1.0), 1.5)
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if self._cons is not None:
            self._cons.close()
            self._cons = None
        if self.proc is not None:
            await asyncio.to_thread(self.ns.forget, self.proc)


# --------------------------------------------------------------------------------------------------
# linphonec


class Linphonec:
    """linphonec (liblinphone 5) on stdin: `soundcard use files`, `play`/`record` WAVs, `call`, digits as DTMF.

    `dtmf="rfc4733"` or `"info"` (SIP INFO with application/dtmf-relay). Its state lines ("Call 1 ... connected.")
    are collected from stdout in a thread; `wait_output()` polls them.
    """

    def __init__(
        self, ns: NetNs, workdir: Path, *, wav: Path | None = None, codecs: Sequence[str] = ("PCMA", "PCMU"),
        dtmf: str = "rfc4733", user: str = "linphone",
    ) -> None:
        self.ns, self.workdir, self.wav, self.codecs, self.dtmf, self.user = ns, workdir, wav, codecs, dtmf, user
        self.sip_port = ns.ports(10)
        self.rtp_port = ns.ports(10)
        self.proc: Proc | None = None
        self.lines: list[str] = []
        self._thread: threading.Thread | None = None
        self.record_path = workdir / "heard.wav"

    def _write_config(self) -> Path:
        home = self.workdir / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)  # else the core never starts
        rc = [
            "[sip]", f"sip_port={self.sip_port}", "sip_tcp_port=0", "sip_tls_port=0",
            f"use_info={1 if self.dtmf == 'info' else 0}", f"use_rfc2833={0 if self.dtmf == 'info' else 1}",
            f"contact=sip:{self.user}@127.0.0.1", "inc_timeout=30", "in_call_timeout=0", "guess_hostname=0",
            "[rtp]", f"audio_rtp_port={self.rtp_port}", "audio_jitt_comp=60", "audio_adaptive_jitt_comp_enabled=0",
            "nortp_timeout=30",
            "[sound]", "echocancellation=0", "echolimiter=0", "agc=0", "noisegate=0",
            "[video]", "capture=0", "display=0", "automatically_initiate=0", "automatically_accept=0",
        ]
        for i, codec in enumerate(self.codecs):
            rc += [f"[audio_codec_{i}]", f"mime={codec}", "rate=8000", "channels=1", "enabled=1"]
        path = self.workdir / "linphonerc"
        path.write_text("\n".join(rc) + "\n")
        return path

    async def start(self, within: float = 10.0) -> Linphonec:
        self.workdir.mkdir(parents=True, exist_ok=True)
        rc = self._write_config()
        env = dict(os.environ, HOME=str(self.workdir / "home"))
        self.proc = self.ns.spawn(["linphonec", "-c", str(rc)], name="linphonec", stdin=subprocess.PIPE, env=env,
                                  capture=True)
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()
        self.send("soundcard use files")
        await self.wait_output(r"Using wav files", within=within)
        if self.wav:
            self.send(f"play {self.wav}")
        self.send(f"record {self.record_path}")
        return self

    def _collect(self) -> None:
        assert self.proc is not None and self.proc.popen.stdout is not None
        for raw in self.proc.popen.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def send(self, line: str) -> None:
        if self.proc is None or self.proc.popen.stdin is None:
            raise HarnessError("linphonec not started")
        self.proc.popen.stdin.write(line.encode() + b"\n")
        self.proc.popen.stdin.flush()

    async def wait_output(self, pattern: str, within: float = 10.0, start: int = 0) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + within
        while True:
            for line in self.lines[start:]:
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                tail = "\n".join(x for x in self.lines[-30:] if not re.match(r"^\d{4}-\d\d-\d\d ", x))
                raise HarnessError(f"linphonec: no /{pattern}/ within {within}s\n{tail}")
            await asyncio.sleep(0.05)

    async def call(self, uri: str) -> None:
        self.send(f"call {uri}")

    async def send_dtmf(self, digits: str, gap: float = 1.2) -> None:
        """One digit per line; linphonec drops a digit typed within about a second of the previous one."""
        for d in digits:
            self.send(d)
            await asyncio.sleep(gap)

    async def terminate(self) -> None:
        self.send("terminate")

    async def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            self.send("quit")
        for _ in range(40):
            if not self.proc.alive():
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(self.ns.forget, self.proc)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2)
        self.proc = None


# --------------------------------------------------------------------------------------------------
# Kamailio


class Kamailio:
    """Kamailio from Debian with `deploy/kamailio/kamailio.cfg`: registrar + record-routing proxy with digest auth.

    Users come from a db_text `subscriber` table written per instance (plain passwords, realm = domain).
    """

    def __init__(self, ns: NetNs, workdir: Path, users: dict[str, str], *, port: int = 5060, domain: str = "127.0.0.1",
                 cfg: Path = KAMAILIO_CFG, flags: Sequence[str] = ()) -> None:
        self.ns, self.workdir, self.users, self.port, self.domain, self.cfg = ns, workdir, users, port, domain, cfg
        self.flags = list(flags)  # `-A NAME` defines, e.g. WITH_LEGACY_UA_FIXES
        self.proc: Proc | None = None

    def write_db(self) -> Path:
        db = self.workdir / "dbtext"
        db.mkdir(parents=True, exist_ok=True)
        (db / "version").write_text(
            "table_name(str) table_version(int)\nsubscriber:7\nlocation:9\nversion:1\n"
        )
        rows = "".join(f"{i}:{user}:{self.domain}:{pw}:::\n" for i, (user, pw) in enumerate(sorted(self.users.items()), 1))
        (db / "subscriber").write_text(
            "id(int,auto) username(str) domain(str) password(str) ha1(str,null) ha1b(str,null)\n" + rows
        )
        return db

    async def start(self, within: float = 10.0) -> Kamailio:
        db = self.write_db()
        run = self.workdir / "run"
        run.mkdir(parents=True, exist_ok=True)
        argv = [
            "kamailio", "-f", str(self.cfg), "-DD", "-E", "-w", str(self.workdir), "-Y", str(run),
            "-P", str(run / "kamailio.pid"), "-l", f"udp:127.0.0.1:{self.port}",
            "-A", f'DBURL="text://{db}"', "-A", f'SIP_DOMAIN="{self.domain}"',
        ]
        for flag in self.flags:
            argv += ["-A", flag]
        self.proc = self.ns.spawn(argv, name="kamailio", log=self.workdir / "kamailio.log")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise HarnessError(f"kamailio exited with {self.proc.popen.returncode}\n{self.proc.tail(40)}")
            if await asyncio.to_thread(self._answers_options):
                return self
        raise HarnessError(f"kamailio did not answer OPTIONS within {within}s\n{self.proc.tail(40)}")

    def _answers_options(self) -> bool:
        reply = sip_options(self.ns, self.port, timeout=0.3)
        return reply is not None

    def tail(self) -> str:
        return self.proc.tail(40) if self.proc else ""

    async def stop(self) -> None:
        if self.proc is not None:
            await asyncio.to_thread(self.ns.forget, self.proc)
            self.proc = None


class AtiendeService:
    """The whole service (`atiende run`) inside the namespace: SIP on 127.0.0.1:`sip_port`, HTTP on 127.0.0.1:8080
    inside, reachable outside at `http_url` (forwarded). Without `redis_url` it starts its private redis-server
    (inside too); pass the test session's Redis after `ns.forward_in(port)` to share it with the test."""

    def __init__(self, ns: NetNs, workdir: Path, *, sip_port: int = 5060, http_port: int = 8080,
                 rtp_ports: tuple[int, int] = (20000, 20999), clock: str | None = None, redis_url: str | None = None,
                 config_dir: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.ns, self.workdir, self.sip_port, self.http_port = ns, workdir, sip_port, http_port
        self.rtp_ports, self.clock, self.redis_url, self.config_dir = rtp_ports, clock, redis_url, config_dir
        self.extra_env = env or {}
        self.proc: Proc | None = None
        self.http_url = ""

    async def start(self, within: float = 30.0) -> AtiendeService:
        import sys

        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "atiende.cli", "run", "--sip", f"127.0.0.1:{self.sip_port}",
                "--http", f"127.0.0.1:{self.http_port}", "--rtp-ports", f"{self.rtp_ports[0]}-{self.rtp_ports[1]}"]
        if self.clock:
            argv += ["--clock", self.clock]
        if self.config_dir:
            argv += ["--config", str(self.config_dir)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATIENDE_")}
        # Every caller in the namespace comes from loopback, as calls through a Kamailio in front of the node would:
        # trusted, so the per-source call cap (sip.max_calls_per_source) does not apply to them.
        env |= {"ATIENDE_SERVICE__DATA_DIR": str(self.workdir / "var"), "PYTHONPATH": str(REPO),
                "ATIENDE_SIP__TRUSTED_PROXIES": "['127.0.0.1']"} | self.extra_env
        if self.redis_url:
            env["ATIENDE_REDIS_URL"] = self.redis_url
        self.proc = self.ns.spawn(argv, name="atiende", log=self.workdir / "atiende.log", env=env, cwd=REPO)
        self.http_url = f"http://127.0.0.1:{self.ns.forward_out(self.http_port)}"
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise HarnessError(f"atiende run exited with {self.proc.popen.returncode}\n{self.proc.tail(40)}")
            if await asyncio.to_thread(self._healthy):
                return self
            await asyncio.sleep(0.1)
        raise HarnessError(f"atiende run: no /healthz within {within}s\n{self.proc.tail(40)}")

    def _healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.http_url}/healthz", timeout=1.0) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def tail(self) -> str:
        return self.proc.tail(40) if self.proc else ""

    async def stop(self) -> int | None:
        """SIGTERM (the service's graceful shutdown), SIGKILL after 15 s; the exit code."""
        if self.proc is None:
            return None
        code = await asyncio.to_thread(self.proc.stop, 15.0)
        with contextlib.suppress(ValueError):
            self.ns.procs.remove(self.proc)
        return code


def sip_options(ns: NetNs, port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> str | None:
    """Send one OPTIONS over UDP inside the namespace; the response text, or None on timeout."""
    s = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        tag, branch, cid = secrets.token_hex(4), "z9hG4bK" + secrets.token_hex(6), secrets.token_hex(8)
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (host, port))
        s.settimeout(timeout)
        try:
            data, _ = s.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
        return data.decode(errors="replace")
    finally:
        s.close()


async def options_ping(ns: NetNs, port: int, host: str = "127.0.0.1", within: float = 1.0) -> str | None:
    """`sip_options` off the event loop (an in-process endpoint on this loop must be free to answer)."""
    return await asyncio.to_thread(sip_options, ns, port, host, within)


# --------------------------------------------------------------------------------------------------
# RTP capture and timing


@dataclass
class RtpStream:
    src: tuple[str, int]
    dst: tuple[str, int]
    ssrc: int
    payload_type: int
    times: list[float] = field(default_factory=list)  # capture time of each packet, seconds
    seqs: list[int] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)

    @property
    def packets(self) -> int:
        return len(self.times)

    def gaps_ms(self) -> np.ndarray:
        """Inter-packet gaps at the receiver (capture on lo = send times), milliseconds."""
        t = np.asarray(self.times)
        return np.diff(t) * 1000.0 if len(t) > 1 else np.zeros(0)

    def drift(self) -> float:
        """(wall time elapsed - media time sent) / media time: + means the sender is slow."""
        if len(self.times) < 50:
            return 0.0
        media = (np.uint32(self.stamps[-1]) - np.uint32(self.stamps[0])) / RATE
        wall = self.times[-1] - self.times[0]
        return float((wall - media) / media) if media > 0 else 0.0


class RtpCapture:
    """dumpcap on the namespace's lo (UDP only, classic pcap), parsed into RTP streams."""

    def __init__(self, ns: NetNs, path: Path, snaplen: int = 64, ports: tuple[int, int] | None = None) -> None:
        self.ns, self.path, self.snaplen, self.ports = ns, path, snaplen, ports
        self.proc: Proc | None = None

    async def start(self) -> RtpCapture:
        bpf = "udp" if self.ports is None else f"udp portrange {self.ports[0]}-{self.ports[1]}"
        self.proc = self.ns.spawn(
            ["dumpcap", "-q", "-i", "lo", "-P", "-s", str(self.snaplen), "-B", "64", "-f", bpf, "-w", str(self.path)],
            name="dumpcap", log=self.path.with_suffix(".log"),
        )
        for _ in range(100):
            if self.path.exists() and self.path.stat().st_size >= 24:
                await asyncio.sleep(0.2)
                return self
            if not self.proc.alive():
                break
            await asyncio.sleep(0.05)
        raise HarnessError(f"dumpcap did not start\n{self.proc.tail()}")

    async def stop(self) -> None:
        if self.proc is not None:
            await asyncio.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            await asyncio.to_thread(self.proc.popen.wait, 10)
            self.ns.forget(self.proc)
            self.proc = None

    def streams(self) -> list[RtpStream]:
        return parse_rtp_pcap(self.path)

    def sip(self) -> list[SipPacket]:
        """SIP messages in the capture (start it with snaplen=65535 to keep whole messages)."""
        return sip_trace(self.path)


@dataclass
class SipPacket:
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    first_line: str  # "INVITE sip:900@... SIP/2.0" or "SIP/2.0 200 OK"
    call_id: str
    cseq: str
    route: str
    record_route: str

    @property
    def method(self) -> str | None:
        return None if self.first_line.startswith("SIP/2.0") else self.first_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        return int(self.first_line.split()[1]) if self.first_line.startswith("SIP/2.0") else None


def sip_trace(path: Path) -> list[SipPacket]:
    """SIP over UDP in a pcap, decoded by tshark (its SIP heuristics find any port)."""
    fields = ["frame.time_epoch", "ip.src", "udp.srcport", "ip.dst", "udp.dstport", "sip.Request-Line",
              "sip.Status-Line", "sip.Call-ID", "sip.CSeq", "sip.Route", "sip.Record-Route"]
    argv = ["tshark", "-r", str(path), "-Y", "sip", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
            "-E", "aggregator=,"]
    for f in fields:
        argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise HarnessError(f"tshark failed: {r.stderr.strip()[-300:]}")
    out: list[SipPacket] = []
    for line in r.stdout.splitlines():
        c = (line.split("\t") + [""] * len(fields))[: len(fields)]
        out.append(SipPacket(float(c[0]), (c[1], int(c[2])), (c[3], int(c[4])), c[5] or c[6], c[7], c[8], c[9], c[10]))
    return out


def parse_rtp_pcap(path: Path) -> list[RtpStream]:
    """RTP (v2, PT < 128 after marker) over IPv4/UDP from a classic pcap of `lo` (Ethernet or raw/cooked)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise HarnessError(f"{path}: not a classic pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    l2 = {1: 14, 113: 16, 101: 0, 228: 0, 0: 4}.get(linktype)
    if l2 is None:
        raise HarnessError(f"{path}: unsupported link type {linktype}")
    streams: dict[tuple[Any, ...], RtpStream] = {}
    off, div = 24, (1e9 if nano else 1e6)
    hdr = struct.Struct(endian + "IIII")
    while off + 16 <= len(data):
        sec, frac, caplen, _ = hdr.unpack_from(data, off)
        pkt = data[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        ip = pkt[l2:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        udp = ip[ihl:]
        rtp = udp[8:]
        if len(rtp) < 12 or rtp[0] >> 6 != 2:
            continue
        pt = rtp[1] & 0x7F
        if pt >= 72 and pt <= 76:  # RTCP range
            continue
        sport, dport = struct.unpack_from("!HH", udp)
        seq, stamp, ssrc = struct.unpack_from("!HII", rtp, 2)
        src = (socket.inet_ntoa(ip[12:16]), sport)
        dst = (socket.inet_ntoa(ip[16:20]), dport)
        key = (src, dst, ssrc)
        st = streams.get(key)
        if st is None:
            st = streams[key] = RtpStream(src, dst, ssrc, pt)
        if pt != st.payload_type:  # telephone-event etc.: not part of the audio pacing
            continue
        st.times.append(sec + frac / div)
        st.seqs.append(seq)
        st.stamps.append(stamp)
    return list(streams.values())


# --------------------------------------------------------------------------------------------------
# Audio fixtures' content

PROMPT_TEXT = "Bienvenido al servicio de atención ciudadana del ayuntamiento."
CALLER_TEXT = "Quiero pedir una cita para el padrón."


@dataclass
class CallAudio:
    prompt: Path  # what the endpoint plays (speech, unpadded)
    caller: Path  # what the client says (speech, unpadded)
    caller_padded: Path  # the client's microphone file: speech then a minute of silence

    def prompt_frames(self) -> list[bytes]:
        return wav_frames(self.prompt)


def make_test_audio(directory: Path) -> CallAudio:
    directory.mkdir(parents=True, exist_ok=True)
    prompt = espeak_wav(PROMPT_TEXT, directory / "prompt.wav")
    caller = espeak_wav(CALLER_TEXT, directory / "caller.wav", speed=140)
    padded = pad_wav(caller, directory / "caller-padded.wav", before=0.5, after=90)
    return CallAudio(prompt=prompt, caller=caller, caller_padded=padded)


async def collect_frames(frames: AsyncIterator[bytes], seconds: float) -> bytes:
    """Up to `seconds` of 20 ms frames from an async iterator (e.g. `call.audio()`), stopping early at its end."""
    out = bytearray()
    want = int(seconds * RATE * 2)

    async def pull() -> None:
        async for frame in frames:
            out.extend(frame)
            if len(out) >= want:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pull(), seconds + 5.0)
    return bytes(out)


# --------------------------------------------------------------------------------------------------
# An on_call handler for tests


@dataclass
class CallResult:
    call: Any  # telephony.call.Call
    heard: bytearray = field(default_factory=bytearray)  # what the endpoint received, PCM16 8 kHz
    digits: str = ""
    played: bool | None = None  # what call.play() returned
    error: BaseException | None = None


class Answerer:
    """`on_call` for a SipEndpoint in tests: answer (or not), play `prompt` while recording what comes in and
    collecting DTMF, then hang up after `hangup_after_s` (None: wait for the caller to hang up, at most
    `max_s`). `results` holds one CallResult per call; `done` is set as each handler finishes."""

    def __init__(
        self, prompt: Sequence[bytes] = (), *, answer: bool = True, answer_delay_s: float = 0.0,
        hangup_after_s: float | None = None, max_s: float = 30.0,
    ) -> None:
        self.prompt, self.answer, self.answer_delay_s = list(prompt), answer, answer_delay_s
        self.hangup_after_s, self.max_s = hangup_after_s, max_s
        self.results: list[CallResult] = []
        self.done = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, call: Any) -> None:
        res = CallResult(call)
        self.results.append(res)
        self.started.set()
        try:
            await self._run(call, res)
        except BaseException as exc:  # the test asserts on it; the endpoint must not see it
            res.error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.done.set()

    async def _run(self, call: Any, res: CallResult) -> None:
        if self.answer_delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.ended.wait(), self.answer_delay_s)
        if not self.answer:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.ended.wait(), self.max_s)
            return
        await call.answer()

        async def record() -> None:
            async for frame in call.audio():
                res.heard.extend(frame)

        async def digits() -> None:
            async for d in call.dtmf():
                res.digits += d

        async def play() -> None:
            res.played = await call.play(self.prompt, interrupt_on_dtmf=False)

        tasks = [asyncio.create_task(t()) for t in (record, digits, play)]
        try:
            limit = self.hangup_after_s if self.hangup_after_s is not None else self.max_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.ended.wait(), limit)
            if not call.ended.is_set():
                await call.hangup()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self, count: int = 1, within: float = 30.0) -> list[CallResult]:
        """Until `count` handlers finished; HarnessError otherwise."""
        deadline = time.monotonic() + within
        while sum(1 for r in self.results if r.call.ended.is_set()) < count or not self.done.is_set():
            if time.monotonic() > deadline:
                raise HarnessError(f"{len(self.results)} call(s) reached the endpoint, {count} expected to end")
            self.done.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), 0.2)
        return self.results


# --------------------------------------------------------------------------------------------------
# pytest fixtures (use with `pytest_plugins = ["tests.sip_harness"]` in a test module)

try:
    import pytest
except ImportError:  # bench scripts import this module without pytest
    pytest = None  # type: ignore[assignment,unused-ignore]

if pytest is not None:

    @pytest.fixture
    def netns(tmp_path: Path) -> Iterator[NetNs]:
        """A fresh namespace with only lo; everything started in it is stopped and it is deleted afterwards."""
        reason = netns_unavailable()
        if reason:
            pytest.skip(reason)
        ns = NetNs(workdir=tmp_path).open()
        try:
            yield ns
        finally:
            ns.close()

    @pytest.fixture
    async def in_netns(netns: NetNs) -> AsyncIterator[NetNs]:
        """The test's thread (and the loop's executor threads) run inside the namespace, so an in-process
        SipEndpoint binds to its lo. Afterwards the loop gets a fresh executor, started outside."""
        from concurrent.futures import ThreadPoolExecutor

        loop = asyncio.get_running_loop()
        back = _thread_ns_fd()
        _setns(netns.fd)
        inside = ThreadPoolExecutor(thread_name_prefix="netns")  # threads start lazily, from this thread: inside
        loop.set_default_executor(inside)
        try:
            yield netns
        finally:
            _setns(back)
            os.close(back)
            loop.set_default_executor(ThreadPoolExecutor())
            inside.shutdown(wait=False)

    @pytest.fixture
    async def sip_endpoint(in_netns: NetNs) -> AsyncIterator[Callable[..., Any]]:
        """Factory: `ep = await sip_endpoint(on_call, port=5060, **SipConfig fields)` -> a started
        telephony.endpoint.SipEndpoint on 127.0.0.1 inside the namespace (RTP 20000-20999); stopped afterwards."""
        from config.telephony import SipConfig

        SipEndpoint = pytest.importorskip("telephony.endpoint", reason="telephony.endpoint not built yet").SipEndpoint
        started: list[Any] = []

        async def make(on_call: Callable[[Any], Any], **cfg: Any) -> Any:
            fields = {"host": "127.0.0.1", "port": 5060, "rtp_port_min": 20000, "rtp_port_max": 20999} | cfg
            ep = SipEndpoint(SipConfig(**fields), on_call)
            await ep.start()
            started.append(ep)
            return ep

        try:
            yield make
        finally:
            for ep in started:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ep.stop(), 10)

    @pytest.fixture
    def netns_redis(netns: NetNs, redis_server: Any) -> str:
        """The session Redis, reachable at the same URL from inside the namespace."""
        netns.forward_in(redis_server.port, redis_server.host)
        return str(redis_server.url)

    @pytest.fixture(scope="session")
    def test_audio(tmp_path_factory: pytest.TempPathFactory) -> CallAudio:
        reason = require_programs("espeak-ng", "sox")
        if reason:
            pytest.skip(reason)
        return make_test_audio(tmp_path_factory.mktemp("audio"))

    @pytest.fixture
    async def baresips(netns: NetNs, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
        """Factory: `b = await baresips(wav=..., user=...)` -> started Baresip; all stopped afterwards."""
        reason = require_programs("baresip")
        if reason:
            pytest.skip(reason)
        started: list[Baresip] = []

        async def make(**kw: Any) -> Baresip:
            b = Baresip(netns, tmp_path / f"baresip{len(started)}", **kw)
            started.append(b)
            return await b.start()

        try:
            yield make
        finally:
            for b in started:
                await b.stop()

    @pytest.fixture
    async def linphones(netns: NetNs, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
        reason = require_programs("linphonec")
        if reason:
            pytest.skip(reason)
        started: list[Linphonec] = []

        async def make(**kw: Any) -> Linphonec:
            lp = Linphonec(netns, tmp_path / f"linphone{len(started)}", **kw)
            started.append(lp)
            return await lp.start()

        try:
            yield make
        finally:
            for lp in started:
                await lp.stop()

    @pytest.fixture
    async def atiende_service(netns: NetNs, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
        """Factory: `svc = await atiende_service(clock="2026-12-04T19:00:00+01:00")` -> `atiende run` in the
        namespace (SIP 127.0.0.1:5060 inside, HTTP at `svc.http_url` outside); stopped afterwards."""
        started: list[AtiendeService] = []

        async def make(**kw: Any) -> AtiendeService:
            svc = AtiendeService(netns, tmp_path / f"atiende{len(started)}", **kw)
            started.append(svc)
            return await svc.start()

        try:
            yield make
        finally:
            for svc in started:
                await svc.stop()

    @pytest.fixture
    async def kamailio(netns: NetNs, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
        """Factory: `k = await kamailio({"900": "secret"})` -> a running registrar/proxy on 127.0.0.1:5060."""
        reason = require_programs("kamailio")
        if reason:
            pytest.skip(reason)
        started: list[Kamailio] = []

        async def make(users: dict[str, str], **kw: Any) -> Kamailio:
            k = Kamailio(netns, tmp_path / f"kamailio{len(started)}", users, **kw)
            started.append(k)
            return await k.start()

        try:
            yield make
        finally:
            for k in started:
                await k.stop()
