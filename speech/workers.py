"""Speech engines in worker processes, so their CPU and their GIL never touch the loop that paces RTP.

Measured with bench/bench_ivr_load.py (see bench/README.md): with Whisper, espeak-ng and the router's judge in
threads of the service process, 40 callers 0.5 s apart lost RTP packets and stalled the event loop; the decodes
hold the GIL in Python code (feature extraction, beam bookkeeping) and every thread switch costs the loop.

Each worker is a small Python started with `python -m speech.workers` (subprocess: vfork + exec, not a fork of
the big service process, and it imports only the speech package), talking over a socketpair with
`multiprocessing.connection` framing (pickled tuples). It runs `threads` requests at once and lowers its own
CPU priority (`nice`), so when the box is short of CPU the media loop wins. The worker exits when the service
goes away (end of file on the socket).

Requests are `(id, op, args)`; replies `(id, "ok" | "err" | "part", payload, busy_s)`: "part" streams synthesis
frames before the final "ok"; `busy_s` is the worker's own time on the request (not the time it waited in the
worker's queue), which the admission estimate needs. A stream (vosk) lives in one worker: its requests always go
there. A computation (a decode, a closed set's scoring, a render) cancelled before a worker thread picks it up never
runs: the worker answers its cancel at once ("err", "cancelled"), so the service knows it no longer owes that
worker time. One already running finishes (CTranslate2 cannot be interrupted; a synthesis stops at its next frame)
and its answer is dropped by the service. `stats` (answered at once, not queued) counts the requests each operation
ran and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from config.speech import SpeechConfig
from core.errors import Unavailable

log = logging.getLogger(__name__)

FRAMES_PER_PART = 10  # 200 ms of synthesis per message: the first frames leave as soon as they are rendered
# Operations whose only effect is their answer: skipped when cancelled before they start. Stream operations (open,
# accept, final, drop) and loads always run: they change the worker's state.
SKIPPABLE = frozenset({"transcribe", "choose", "render", "synth"})


# ---- worker side ---------------------------------------------------------------------------------


class _Engines:
    """What one worker process has loaded (lazily: an STT worker never loads TTS and the other way round)."""

    def __init__(self, cfg: SpeechConfig) -> None:
        from speech.stt import SttEngine, SttStream
        from speech.tts import TtsEngine

        self.cfg = cfg
        self._stt: SttEngine | None = None
        self._tts: TtsEngine | None = None
        self.streams: dict[int, SttStream] = {}
        self.cancelled: set[int] = set()  # running requests whose answer nobody waits for (a synthesis stops)
        self.ran: Counter[str] = Counter()  # requests started, by operation
        self.skipped: Counter[str] = Counter()  # requests cancelled before they started, by operation
        self._lock = threading.Lock()

    @property
    def stt(self) -> Any:
        with self._lock:
            if self._stt is None:
                from speech.engines import load_stt

                self._stt = load_stt(self.cfg)
            return self._stt

    @property
    def tts(self) -> Any:
        with self._lock:
            if self._tts is None:
                from speech.engines import load_tts

                self._tts = load_tts(self.cfg)
            return self._tts


def _handle(eng: _Engines, rid: int, op: str, args: tuple[Any, ...], reply: Callable[[int, str, Any], None]) -> None:
    from core.audio import RATE
    from speech.audio import to_float
    from speech.tts import frames_8k

    try:
        if op == "load":
            which = args[0]
            if which == "stt":
                e = eng.stt
                reply(rid, "ok", {"name": e.name, "streaming": bool(e.streaming)})
            else:
                from speech.engines import tts_id

                t = eng.tts
                reply(rid, "ok", {"name": t.name, "voice": t.voice, "id": tts_id(eng.cfg, t)})
        elif op == "transcribe":  # (pcm 8 kHz, hints, grammar, second opinion?[, retry?]): utterances, recordings
            pcm, hints, grammar, second, *more = args
            audio = to_float(pcm)
            e = eng.stt
            if second:
                again = getattr(e, "second_opinion", None)
                reply(rid, "ok", None if again is None else again(audio, RATE, hints, grammar))
            else:
                reply(rid, "ok", e.transcribe(audio, RATE, hints, grammar, retry=bool(more[0]) if more else True))
        elif op == "choose":  # (pcm 8 kHz, ClosedSet): which expected answer a short utterance says
            pcm, closed = args
            choose = getattr(eng.stt, "choose", None)
            reply(rid, "ok", (None, 0.0) if choose is None else choose(to_float(pcm), RATE, closed))
        elif op == "open":
            sid, hints, grammar = args
            eng.streams[sid] = eng.stt.stream(hints, grammar)
            reply(rid, "ok", None)
        elif op == "accept":
            sid, pcm = args
            reply(rid, "ok", eng.streams[sid].accept(pcm))
        elif op == "final":
            (sid,) = args
            reply(rid, "ok", eng.streams.pop(sid).final())
        elif op == "drop":
            eng.streams.pop(args[0], None)
            reply(rid, "ok", None)
        elif op == "synth":
            (text,) = args
            batch: list[bytes] = []
            for frame in frames_8k(eng.tts, text):
                if rid in eng.cancelled:
                    break
                batch.append(frame)
                if len(batch) >= FRAMES_PER_PART:
                    reply(rid, "part", batch)
                    batch = []
            if batch:
                reply(rid, "part", batch)
            eng.cancelled.discard(rid)
            reply(rid, "ok", None)
        elif op == "render":
            (text,) = args
            reply(rid, "ok", b"".join(frames_8k(eng.tts, text)))
        else:
            reply(rid, "err", f"unknown operation {op!r}")
    except BaseException as exc:  # every failure goes back to the caller, the worker goes on
        reply(rid, "err", f"{type(exc).__name__}: {exc}")


def serve(fd: int, cfg_json: str, threads: int, nice: int) -> None:
    """The worker's main loop: read requests, run them on `threads` threads, reply as they finish."""
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    conn = Connection(fd)
    eng = _Engines(SpeechConfig.model_validate_json(cfg_json))
    send_lock = threading.Lock()
    started: dict[int, float] = {}
    # Requests submitted and not yet taken by a thread, and those running: a cancel skips the first, marks the
    # second, and is forgotten for a request already answered. Guarded by `state` (the reader and the threads).
    state = threading.Lock()
    queued: dict[int, str] = {}
    running: set[int] = set()

    def reply(rid: int, kind: str, payload: Any) -> None:
        busy = time.perf_counter() - started[rid] if kind != "part" and rid in started else 0.0
        if kind != "part":
            started.pop(rid, None)
        with send_lock:
            conn.send((rid, kind, payload, busy))

    def run(rid: int, op: str, args: tuple[Any, ...]) -> None:
        with state:
            if queued.pop(rid, None) is None:
                return  # cancelled while queued: skipped and answered already
            running.add(rid)
            eng.ran[op] += 1
        started[rid] = time.perf_counter()  # when a thread takes it: the time queued in the pool is not its cost
        try:
            _handle(eng, rid, op, args, reply)
        finally:
            with state:
                running.discard(rid)
                eng.cancelled.discard(rid)

    def cancel(rid: int) -> None:
        with state:
            op = queued.get(rid)
            if op in SKIPPABLE:
                # Abandoned while queued (a closed set's scoring the transcript made needless, a stale early decode,
                # a hung-up caller): it would only delay everyone's next answer. Answered now, so the service stops
                # counting it in this worker's backlog.
                del queued[rid]
                eng.skipped[op] += 1
                reply(rid, "err", "cancelled")
            elif rid in running:
                eng.cancelled.add(rid)

    # Not `with ThreadPoolExecutor(...)`: its exit waits for every request running and queued (decodes of whole
    # voicemails) although nobody can read their answers any more, so the service's close() waited 2 s and killed
    # the worker.
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="speech")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break  # the service is gone
        if msg is None:
            break
        rid, op, args = msg
        if op == "cancel":
            cancel(args[0])
            continue
        if op == "stats":  # answered here, not behind the queued decodes
            with state:
                reply(rid, "ok", {"ran": dict(eng.ran), "skipped": dict(eng.skipped), "queued": len(queued)})
            continue
        with state:
            queued[rid] = op
        pool.submit(run, rid, op, args)
    pool.shutdown(wait=False, cancel_futures=True)
    # The running request's thread is not a daemon and would keep the process alive: end it here. Nothing to
    # clean up: the worker holds no files or state of its own (the service's end of the socket is already gone,
    # and an espeak-ng child still rendering ends on its broken pipe). This process was started by exec, not
    # forked from the service, so its exit touches nothing of the service's.
    os._exit(0)


# ---- service side --------------------------------------------------------------------------------


class _Call:
    """One request in flight: a future for the final reply, and a queue for streamed parts."""

    def __init__(self, loop: asyncio.AbstractEventLoop, streamed: bool) -> None:
        self.loop = loop
        self.done: asyncio.Future[Any] = loop.create_future()
        self.parts: asyncio.Queue[list[bytes]] | None = asyncio.Queue() if streamed else None
        self.busy_s = 0.0  # the worker's own time on it (set with the final reply)
        self.answered = False  # the final reply came (`done` may be cancelled by a waiter that gave up instead)
        self.on_final: Callable[[], None] | None = None  # run with the final reply (an abandoned request's accounting)

    def deliver(self, kind: str, payload: Any, busy_s: float = 0.0) -> None:
        self.busy_s = busy_s
        if kind == "part":
            if self.parts is not None:
                self.parts.put_nowait(payload)
            return
        self.answered = True
        if self.on_final is not None:
            self.on_final()
        if not self.done.done():
            if kind == "ok":
                self.done.set_result(payload)
            else:
                self.done.set_exception(Unavailable(f"speech worker: {payload}"))


class WorkerProcess:
    """One worker process and the thread that reads its replies."""

    _ids = itertools.count(1)

    def __init__(self, role: str, cfg: SpeechConfig, *, threads: int = 1, nice: int = 0) -> None:
        self.role = role
        self.threads = threads
        ours, theirs = socket.socketpair()
        repo = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [sys.executable, "-m", "speech.workers", str(theirs.fileno()), str(threads), str(nice)]
        # close_fds + pass_fds: the worker inherits only its end of the socket (subprocess uses vfork/exec here,
        # so the big service process is never copied).
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, pass_fds=(theirs.fileno(),), env=env,
                                     close_fds=True)
        theirs.close()
        assert self.proc.stdin is not None
        self.proc.stdin.write(cfg.model_dump_json().encode() + b"\n")
        self.proc.stdin.close()
        self.conn = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._calls: dict[int, _Call] = {}
        self.in_flight = 0
        # Decodes and scorings sent and not answered (cancelled ones too, until the worker says it skipped or
        # finished them): (when sent, expected worker seconds). The worker runs them one after the other, so their
        # sum is the wait a new one would have here.
        self._work: dict[int, tuple[float, float]] = {}
        self.alive = True
        self._reader = threading.Thread(target=self._read, name=f"speech-{role}-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                rid, kind, payload, busy_s = self.conn.recv()
            except (EOFError, OSError):
                break
            call = self._calls.get(rid)
            if call is None:
                continue
            if kind != "part":
                self._calls.pop(rid, None)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                call.loop.call_soon_threadsafe(call.deliver, kind, payload, busy_s)
        self.alive = False
        for rid in list(self._calls):
            call = self._calls.pop(rid)
            with contextlib.suppress(RuntimeError):
                call.loop.call_soon_threadsafe(call.deliver, "err", f"the {self.role} worker exited")

    def _send(self, msg: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(msg)

    def start(self, op: str, *args: Any, streamed: bool = False) -> tuple[int, _Call]:
        if not self.alive:
            raise Unavailable(f"the {self.role} speech worker exited")
        rid = next(self._ids)
        call = _Call(asyncio.get_running_loop(), streamed)
        self._calls[rid] = call
        try:
            self._send((rid, op, args))
        except OSError as exc:
            self._calls.pop(rid, None)
            self.alive = False
            raise Unavailable(f"the {self.role} speech worker is gone: {exc}") from None
        return rid, call

    async def call(self, op: str, *args: Any, within: float = 60.0) -> Any:
        out, _ = await self.call_timed(op, *args, within=within)
        return out

    async def call_timed(self, op: str, *args: Any, within: float = 60.0, cost_s: float = 0.0) -> tuple[Any, float]:
        """(the reply, the worker's own seconds on it). `cost_s`: the expected worker time, counted in
        `backlog_s` until the worker answers.

        Cancelling the awaiting task (or its timeout) cancels the request: one not started yet never runs and the
        worker answers at once; one running finishes, its answer dropped. Either way its cost stays in the backlog
        until that answer, since until then the worker owes it. (`wait_for` cancels `call.done` when it gives up,
        so `call.answered`, not `done()`, says whether the worker answered: the cancel was never sent before.)"""
        rid, call = self.start(op, *args)
        self.in_flight += 1
        if cost_s > 0:
            self._work[rid] = (time.monotonic(), cost_s)
        try:
            out = await asyncio.wait_for(call.done, within)
            return out, call.busy_s
        except TimeoutError:
            raise Unavailable(f"the {self.role} speech worker did not answer {op} within {within:.0f} s") from None
        finally:
            self.in_flight -= 1
            if call.answered or not self.alive:
                self._work.pop(rid, None)
                self._calls.pop(rid, None)
            else:
                # Kept in `_calls` so the reader hands the worker's answer here, which ends its cost.
                def forget() -> None:
                    self._work.pop(rid, None)

                call.on_final = forget
                with contextlib.suppress(OSError):
                    self._send((0, "cancel", (rid,)))

    def backlog_s(self) -> float:
        """Worker seconds still owed to the decodes sent here: what a new decode would wait for. The oldest one
        is running (one decode at a time), so its elapsed time is already paid, up to its expected cost."""
        if not self._work:
            return 0.0
        items = sorted(self._work.values())
        started, cost = items[0]
        return max(cost - (time.monotonic() - started), 0.1 * cost) + sum(c for _, c in items[1:])

    async def stream_parts(self, op: str, *args: Any) -> AsyncIterator[list[bytes]]:
        rid, call = self.start(op, *args, streamed=True)
        assert call.parts is not None
        self.in_flight += 1
        try:
            while True:
                get = asyncio.ensure_future(call.parts.get())
                await asyncio.wait([get, call.done], return_when=asyncio.FIRST_COMPLETED)
                if get.done():
                    yield get.result()
                    continue
                get.cancel()
                while not call.parts.empty():
                    yield call.parts.get_nowait()
                call.done.result()  # raises the worker's error
                return
        finally:
            self.in_flight -= 1
            if not call.done.done():
                with contextlib.suppress(OSError):
                    self._send((0, "cancel", (rid,)))
                self._calls.pop(rid, None)

    async def stats(self) -> dict[str, Any]:
        """The worker's counts: {"ran": {op: n}, "skipped": {op: n}, "queued": n} (answered ahead of the queue)."""
        out: dict[str, Any] = await self.call("stats", within=10.0)
        return out

    def close(self) -> None:
        self.alive = False
        # Shut the socket down, then close it. A close alone ended nothing: the reader thread's recv() holds the
        # socket open until it returns, so the worker never saw the end of file and every close waited 2 s and
        # killed it (measured: an idle pool's close took 2.06 s, exit status -9). The shutdown wakes the reader
        # (whose waiters get "worker exited") and tells the worker at once.
        with contextlib.suppress(OSError), socket.fromfd(self.conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.shutdown(socket.SHUT_RDWR)
        if self._reader is not threading.current_thread():
            self._reader.join(1.0)
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(2.0)


class WorkerPool:
    """`stt` processes for recognition (one decode each at a time), one `tts` process for synthesis (several
    renders at once: espeak-ng is a subprocess of it, piper's onnxruntime has its own lock). Workers that died
    are replaced on the next request."""

    def __init__(self, cfg: SpeechConfig) -> None:
        self.cfg = cfg
        self._stt: list[WorkerProcess] = []
        self._tts: WorkerProcess | None = None
        self._lock = threading.Lock()
        self.closed = False  # closed pools start no worker again (a retired pool's stragglers get Unavailable)
        # Running means of one decode's worker time (not its wall time: a wall time includes the queue, which
        # `backlog_s` already counts). Only completed decodes move them, so they describe the engine, never a
        # stale backlog.
        self.decode_s = 0.4  # an utterance on its own frames (open answers' first decode)
        self.window_s = 1.2  # an utterance in a padded 30 s window (closed answers, second opinions): ~3x
        self.choose_s = 0.3  # a closed set's scoring (one encoding, its phrases teacher-forced)

    def _stt_workers(self) -> list[WorkerProcess]:
        with self._lock:
            if self.closed:
                raise Unavailable("the speech workers were closed (config reload or shutdown)")
            while len(self._stt) < max(1, self.cfg.stt_workers):
                self._stt.append(WorkerProcess("stt", self.cfg, threads=1, nice=self.cfg.worker_nice))
            for i, w in enumerate(self._stt):
                if not w.alive:
                    w.close()
                    self._stt[i] = WorkerProcess("stt", self.cfg, threads=1, nice=self.cfg.worker_nice)
            return self._stt

    def tts_worker(self) -> WorkerProcess:
        with self._lock:
            if self.closed:
                raise Unavailable("the speech workers were closed (config reload or shutdown)")
            if self._tts is None or not self._tts.alive:
                if self._tts is not None:
                    self._tts.close()
                self._tts = WorkerProcess("tts", self.cfg, threads=max(1, self.cfg.tts_threads), nice=self.cfg.worker_nice)
            return self._tts

    def stt_worker(self) -> WorkerProcess:
        """The recognition worker that would start a new decode first."""
        return min(self._stt_workers(), key=lambda w: (w.backlog_s(), w.in_flight))

    def queued_decodes(self) -> int:
        return sum(w.in_flight for w in self._stt)

    def backlog_s(self) -> float:
        """How long a new decode would wait before a worker starts it (0 when one is free)."""
        return min((w.backlog_s() for w in self._stt), default=0.0)

    def expected_wait_s(self) -> float:
        """How long a new utterance would wait for its transcript now: the work queued ahead of it on the
        soonest free worker, plus its own decode."""
        return self.backlog_s() + self.decode_s

    def cost_s(self, window: bool) -> float:
        return self.window_s if window else self.decode_s

    def observe_decode(self, busy_s: float, *, window: bool = False) -> None:
        if busy_s <= 0:
            return
        if window:
            self.window_s = 0.8 * self.window_s + 0.2 * busy_s
        else:
            self.decode_s = 0.8 * self.decode_s + 0.2 * busy_s

    def observe_choose(self, busy_s: float) -> None:
        if busy_s > 0:
            self.choose_s = 0.8 * self.choose_s + 0.2 * busy_s

    async def warm_up(self) -> dict[str, Any]:
        loads = [w.call("load", "stt", within=180) for w in self._stt_workers()]
        tts = self.tts_worker().call("load", "tts", within=60)
        results = await asyncio.gather(*loads, tts)
        return {"stt": results[0], "tts": results[-1]}

    def busy(self) -> bool:
        """Some request sent to these workers still has someone waiting for its answer. Read from another thread
        (`drain`): a look at dicts the loop thread changes, which is all a poll needs."""
        return any(w._calls for w in [*self._stt, *([self._tts] if self._tts else [])])

    def drain(self, stop: threading.Event, timeout: float) -> None:
        """Wait (in a thread, never on the loop) until no request is waiting for an answer here, `stop` is set or
        `timeout` has passed: a retired pool finishes what it was asked before it is closed."""
        deadline = time.monotonic() + timeout
        while self.busy() and time.monotonic() < deadline and not stop.wait(0.05):
            pass

    def close(self) -> None:
        with self._lock:
            self.closed = True
            for w in [*self._stt, *([self._tts] if self._tts else [])]:
                w.close()
            self._stt, self._tts = [], None


def _main() -> None:
    fd, threads, nice = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    cfg_json = sys.stdin.readline()
    logging.basicConfig(level=logging.WARNING, format=f"speech worker {os.getpid()}: %(message)s")
    t = time.perf_counter()
    try:
        serve(fd, cfg_json, threads, nice)
    finally:
        log.debug("worker ran %.1f s", time.perf_counter() - t)


if __name__ == "__main__":
    _main()
