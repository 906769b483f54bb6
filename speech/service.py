"""`Speech`: the async face of the speech engines (runtime.speech).

With `speech.processes` (the default) the engines run in worker processes (`speech.workers`): recognition in
`stt_workers` processes, synthesis in one, all at a lower CPU priority, so no decode, render or fork holds the
GIL of the process whose event loop paces every call's RTP (measured: bench/bench_ivr_load.py). Engines given
to the constructor (tests) or `processes: false` run in two thread pools of this process instead.
Endpointing (webrtcvad, a few microseconds per frame) runs inline.

Latency (issue 14; off by default, see config.speech.early_commit_ms for the measurement): on a short pause
(`early_commit_ms`) the utterance so far is decoded ahead; when the
caller's judge (`accept`: the router) takes that transcript and the caller is still silent, the answer is
committed without waiting for the full end silence; otherwise the ahead decode is reused at the end when no
speech came after it (one decode, not two). Texts once synthesised are kept (prompt cache, in memory and on
disk), so a sentence every caller hears (the greeting, an answer) plays at once from the second caller on.
Admission: `overloaded()` says when a new utterance would wait longer than `max_recognition_wait_ms` for its
transcript (the decodes and closed-set scorings queued ahead); the IVR then offers the keypad instead of leaving
the caller in silence.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from config.models import Settings
from config.speech import SpeechConfig
from core.audio import RATE
from speech.audio import Framer, to_float
from speech.cache import PromptCache
from speech.endpoint import BargeIn as BargeInDetector
from speech.endpoint import Endpointer
from speech.engines import load_stt as load_stt
from speech.engines import load_tts as load_tts
from speech.engines import tts_id
from speech.stt import (
    Alternative,
    ClosedSet,
    SttEngine,
    SttResult,
    SttStream,
    chosen,
    closed_fits,
    first_is_final,
    other_hypotheses,
    settle,
    take_hypothesis,
)
from speech.tts import TtsEngine, frames_8k
from speech.workers import WorkerPool, WorkerProcess

log = logging.getLogger(__name__)

ListenStatus = Literal["ok", "no_input", "no_match", "max_length", "error"]

# How long a retired worker pool (config reload) may go on answering the requests sent to it before its processes
# are closed anyway. Every request is bounded by its caller's own timeout (a 120 s voicemail: 240 s), after which
# nobody waits for the answer; this only bounds a request whose waiter vanished without saying so.
RETIRE_WAIT_S = 300.0


class ListenResult(BaseModel):
    """One answer of the caller.

    status: ok (text recognised), no_input (no speech before the timeout), no_match (speech, but nothing
    intelligible), max_length (spoke past the limit; text holds what was recognised), error (engine failure).
    """

    status: ListenStatus
    text: str = ""
    confidence: float = 0.0
    alternatives: list[Alternative] = Field(default_factory=list)
    engine: str = ""
    speech_ms: int = 0
    latency_ms: float = Field(0.0, description="end of speech detected -> final transcript")
    error: str | None = None
    second_opinion: bool = False
    early: bool = Field(False, description="committed on a short pause: the judge took the transcript")
    chosen: bool = Field(False, description="picked from the question's closed set by scoring (see ClosedSet)")
    margin: float = Field(0.0, description="when chosen: its lead over the next choice or filler (nats)")
    raw_text: str | None = Field(None, description="when chosen: what the open transcript said")


class _ProcStream:
    """A streaming recognition (vosk) living in one worker process."""

    _ids = iter(range(1, 1 << 62))

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.sid = next(self._ids)

    async def open(self, hints: list[str], grammar: list[str] | None) -> None:
        await self.worker.call("open", self.sid, hints, grammar)

    async def accept(self, pcm: bytes) -> str | None:
        out: str | None = await self.worker.call("accept", self.sid, pcm)
        return out

    async def final(self) -> SttResult:
        out: SttResult = await self.worker.call("final", self.sid)
        return out


class Speech:

    def __init__(self, cfg: SpeechConfig, data_dir: Path, *, default_hints: list[str] | None = None,
                 stt: SttEngine | None = None, tts: TtsEngine | None = None) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.default_hints = default_hints or []
        self._stt = stt
        self._tts = tts
        self._cache: PromptCache | None = None
        self._load_lock = threading.Lock()  # one engine load at a time (held for seconds: never on the loop)
        # The configuration's generation, bumped by `reconfigure`; an engine loaded for an older one is not kept.
        # `_swap` guards the swap itself (a few assignments), so the loop never waits behind a load.
        self._generation = 0
        self._swap = threading.Lock()
        # Old worker pools being closed by threads after a reload; `close()` joins them.
        self._retiring: list[threading.Thread] = []
        self._closing = threading.Event()
        # Injected engines (tests) live here; otherwise the configuration chooses processes or threads.
        self._pool: WorkerPool | None = WorkerPool(cfg) if cfg.processes and stt is None and tts is None else None
        self._info: dict[str, dict[str, object]] = {}
        self._stt_pool = ThreadPoolExecutor(max(cfg.stt_workers, 1), thread_name_prefix="stt")
        self._tts_pool = ThreadPoolExecutor(max(cfg.tts_threads, 1), thread_name_prefix="tts")
        self._judge_pool = ThreadPoolExecutor(1, thread_name_prefix="judge")

    @classmethod
    def from_settings(cls, s: Settings) -> Speech:
        """Engines as configured, with the routing keywords as default hints (for engines that take them)."""
        hints: list[str] = []
        for intent in s.routing.intents:
            hints.extend(intent.keywords)
        return cls(s.speech, s.service.data_dir, default_hints=list(dict.fromkeys(hints)))

    def reconfigure(self, settings: Settings) -> None:
        """A new config: engines reload on next use if their settings changed; cached prompts rekey themselves.

        Called on the event loop (SIGHUP) that paces every call's RTP, so it never waits: the new configuration
        and worker pool are swapped in at once (the new workers start on first use) and the old pool is closed
        by a thread once the requests already sent to it are answered (`_retire`): a decode or a render in
        progress at the reload finishes on the engine it started on."""
        new: SpeechConfig = settings.speech
        if new == self.cfg:
            return
        with self._swap:
            self.cfg = new
            self._generation += 1
            self._stt = self._tts = None
            self._cache = None
            self._info = {}
            old = self._pool
            if old is not None:
                self._pool = WorkerPool(new) if new.processes else None
        if old is not None:
            self._retire(old)

    def _retire(self, pool: WorkerPool) -> None:
        """Close a replaced pool in a thread: closing waits for its processes to exit (seconds when one is busy)."""
        def run() -> None:
            pool.drain(self._closing, RETIRE_WAIT_S)
            pool.close()

        thread = threading.Thread(target=run, name="speech-retire", daemon=True)
        self._retiring = [t for t in self._retiring if t.is_alive()] + [thread]
        thread.start()

    def BargeIn(self) -> BargeInDetector:  # called like the contract's nested class: speech.BargeIn()
        """A detector for one prompt: `feed(frame)` is True once the caller talks over it."""
        return BargeInDetector(min_speech_ms=self.cfg.barge_in_ms)

    # ---- engines (loaded once, lazily, under a lock so two first calls don't load twice) ----

    @property
    def stt(self) -> SttEngine:
        engine = self._stt
        if engine is None:
            with self._load_lock:
                engine = self._stt
                if engine is None:
                    with self._swap:
                        generation, cfg = self._generation, self.cfg
                    t = time.perf_counter()
                    engine = load_stt(cfg)
                    log.info("speech-to-text engine %s loaded in %.1f s", engine.name, time.perf_counter() - t)
                    with self._swap:
                        if generation == self._generation:  # else a reload came during the load: not kept
                            self._stt = engine
        return engine

    @property
    def tts(self) -> TtsEngine:
        engine = self._tts
        if engine is None:
            with self._load_lock:
                engine = self._tts
                if engine is None:
                    with self._swap:
                        generation, cfg = self._generation, self.cfg
                    engine = load_tts(cfg)
                    with self._swap:
                        if generation == self._generation:
                            self._tts = engine
        return engine

    @property
    def cache(self) -> PromptCache:
        if self._cache is None:
            if self._pool is not None:
                # The engine lives in a worker: its own id once it has said (warm-up), else the configured choice.
                engine_id = str(self._info.get("tts", {}).get("id", "")) or tts_id(self.cfg)
            else:
                engine_id = tts_id(self.cfg, self.tts)
            self._cache = PromptCache(self.data_dir / "prompts", engine_id, max_bytes=self.cfg.prompt_cache_mb << 20)
        return self._cache

    async def warm_up(self) -> None:
        """Load both engines now (service start) instead of on the first call."""
        pool = self._pool
        if pool is not None:
            t = time.perf_counter()
            info = await pool.warm_up()
            if pool is not self._pool:
                return  # a reload during the warm-up: that pool is retired, its voice is not the cache's key
            self._info = info
            self._cache = None  # keyed by the worker's real voice from now on
            log.info("speech-to-text engine %s loaded in %.1f s (%d worker processes)", self._info["stt"]["name"],
                     time.perf_counter() - t, max(1, self.cfg.stt_workers))
            return
        loop = asyncio.get_running_loop()
        await asyncio.gather(loop.run_in_executor(self._stt_pool, lambda: self.stt),
                             loop.run_in_executor(self._tts_pool, lambda: self.tts))

    def close(self) -> None:
        # Pools retired by a reload stop waiting for their requests (nobody will read the answers now) and close.
        self._closing.set()
        for thread in self._retiring:
            thread.join()
        if self._pool is not None:
            self._pool.close()
        self._stt_pool.shutdown(wait=False, cancel_futures=True)
        self._tts_pool.shutdown(wait=False, cancel_futures=True)
        self._judge_pool.shutdown(wait=False, cancel_futures=True)

    # ---- capacity ----

    def expected_wait_s(self) -> float:
        """How long a new utterance would wait for its transcript now (0 when engines run in threads)."""
        return self._pool.expected_wait_s() if self._pool is not None else 0.0

    def overloaded(self, in_s: float = 0.0) -> bool:
        """Recognition would exceed the wait budget because of work queued ahead (decodes, closed-set scorings, a
        voicemail's transcription): better offer the keypad than
        leave a caller in silence.

        Only a backlog makes it true. A slow engine with nothing queued is not overload (the keypad would not be
        faster), and an estimate that refuses speech with nothing queued could never recover: no decode would
        run to correct it (the regression of tests/test_ivr_e2e.py, where one slow decode on a busy box turned
        every later question into a keypad offer).

        `in_s`: the earliest the transcript can be needed from now (the question still to be played, the answer
        still to be said); work queued now that will be done by then does not count."""
        if self._pool is None:
            return False
        ahead = self._pool.backlog_s() - in_s
        return ahead > 0 and (ahead + self._pool.decode_s) * 1000 > self.cfg.max_recognition_wait_ms

    # ---- recognition ----

    async def _engine_info(self) -> tuple[str, bool]:
        # The pool and its info taken once: a reload during the await swaps both, and this call goes on with the
        # pool it started on.
        pool, known = self._pool, self._info
        if pool is not None:
            if "stt" not in known:
                known["stt"] = await pool.stt_worker().call("load", "stt", within=180)
            info = known["stt"]
            return str(info["name"]), bool(info["streaming"])
        loop = asyncio.get_running_loop()
        engine = await loop.run_in_executor(self._stt_pool, lambda: self.stt)
        return engine.name, engine.streaming

    async def _decode(self, pcm: bytes, hints: list[str], grammar: list[str] | None, second: bool,
                      retry: bool = True) -> SttResult | None:
        """One decode of an endpointed utterance (None: the engine has no second opinion); `retry`: see
        `WhisperEngine.transcribe`."""
        pool = self._pool  # once: a reload may swap it during the decode
        if pool is not None:
            worker = pool.stt_worker()
            out: SttResult | None
            window = second != bool(grammar)  # as WhisperEngine chooses: the padded window costs ~3x
            out, busy_s = await worker.call_timed("transcribe", pcm, hints, grammar, second, retry,
                                                  cost_s=pool.cost_s(window))
            pool.observe_decode(busy_s, window=window)
            return out
        loop = asyncio.get_running_loop()
        engine = self.stt
        if second:
            again = getattr(engine, "second_opinion", None)
            if again is None:
                return None
            return await loop.run_in_executor(self._stt_pool, again, to_float(pcm), RATE, hints, grammar)
        return await loop.run_in_executor(
            self._stt_pool, lambda: engine.transcribe(to_float(pcm), RATE, hints, grammar, retry=retry))

    async def _choose(self, pcm: bytes, closed: ClosedSet) -> tuple[str | None, float]:
        """The closed set's choice, or (None, 0.0): a failure here only means the open transcript decides."""
        try:
            pool = self._pool
            if pool is not None:
                # Counted in the worker's backlog like a decode (admission), at its own cost; cancelled (the
                # transcript decided), it never runs if it has not started.
                got: tuple[str | None, float]
                got, busy_s = await pool.stt_worker().call_timed("choose", pcm, closed, cost_s=pool.choose_s)
                pool.observe_choose(busy_s)
                return got
            choose = getattr(self.stt, "choose", None)
            if choose is None:
                return None, 0.0
            return await asyncio.get_running_loop().run_in_executor(self._stt_pool, choose, to_float(pcm), RATE,
                                                                    closed)
        except Exception:
            log.exception("scoring a closed answer failed; the transcript decides")
            return None, 0.0

    async def _judge(self, accept: Callable[[str], bool], text: str) -> bool:
        # The judge is the router (CPU work, ~0.3 ms): a thread keeps a slow one off the loop.
        return bool(await asyncio.get_running_loop().run_in_executor(self._judge_pool, accept, text))

    async def _checked(self, pcm: bytes, hints: list[str], grammar: list[str] | None,
                       accept: Callable[[str], bool] | None, first: SttResult | None = None,
                       closed: ClosedSet | None = None) -> SttResult:
        """The transcript; when the judge rejects it, its other hypotheses, then for a short answer to a closed
        question whose transcript is no words or one (a lone "sí" comes back as "y" or nothing) the closed set scored
        on the audio, then the engine's second opinion if that one is accepted (the rejected first transcripts stay
        as alternatives). Measured on the audio test set: 77 -> 80 of 93. The same policy as
        `speech.stt.transcribe_checked`.

        The closed set never overrides words: scored first, it made "no lo sé" a firm "no" (lead 5.1) and "sí, no
        sé" a "sí". It is scored alongside the open decode instead (on another worker), so that a garbled "sí" is
        answered when the decode ends, not a scoring later."""
        scoring: asyncio.Task[tuple[str | None, float]] | None = None
        if closed is not None and first is None and closed_fits(closed, len(pcm) // 2, RATE):
            scoring = asyncio.create_task(self._choose(pcm, closed))
        try:
            if first is None:
                # No padded retry of a loop ("C, C, C, ..." for "sí"): the closed set answers it, 0.9 s sooner.
                first = await self._decode(pcm, hints, grammar, second=False, retry=scoring is None)
                assert first is not None
            if accept is None:
                return first
            # The policy (an expected word heard whole is final, a lone unsure word is no answer) is speech.stt's.
            first_fits = bool(first.text) and await self._judge(accept, first.text)
            if first_is_final(first, hints, first_fits):
                return first
            for alt in other_hypotheses(first, hints):  # the same decode's n-best first: no second decode to wait for
                if await self._judge(accept, alt.text):
                    return take_hypothesis(first, alt)
            if closed is not None and closed_fits(closed, len(pcm) // 2, RATE, first):
                value, lead = await scoring if scoring is not None else await self._choose(pcm, closed)
                if value is not None:
                    log.info("closed answer %r chosen (lead %.1f) over the transcript %r", value, lead, first.text)
                    return chosen(first, value, lead, closed)
        finally:
            if scoring is not None and not scoring.done():
                scoring.cancel()
        pool = self._pool
        if pool is not None and pool.queued_decodes() >= max(1, self.cfg.stt_workers):
            # Every worker is busy: the second opinion (a 30 s padded window, ~3x a first decode) would delay
            # this caller and everyone queued behind; the IVR's retry or keypad handles the miss instead.
            return settle(first, None, first_fits, False, hints)
        other = await self._decode(pcm, hints, grammar, second=True)
        other_fits = other is not None and bool(other.text) and await self._judge(accept, other.text)
        return settle(first, other, first_fits, other_fits, hints)

    async def listen(self, frames: AsyncIterator[bytes], *, hints: list[str] | None = None,
                     grammar: list[str] | None = None, no_input_ms: int | None = None,
                     end_silence_ms: int | None = None, max_ms: int | None = None,
                     on_partial: Callable[[str], None] | None = None,
                     accept: Callable[[str], bool] | None = None, closed: ClosedSet | None = None) -> ListenResult:
        """Listen to one answer: endpointing on the frames, then the final transcript.

        `accept` judges a transcript ("does it answer the question?"); when it says no, an engine with a
        second opinion decodes the utterance again. When it says yes to a decode made on a short pause
        (`speech.early_commit_ms`) and the caller is still silent, the answer is final without waiting for the
        whole end silence. It runs in a thread, so it may be CPU work (the router). `closed`: the answers the
        question expects, scored on a short utterance whose transcript the judge rejects and has no words or one
        (`ClosedSet`, `_checked`).

        Frames are 20 ms of 8 kHz 16-bit mono (other sizes are re-cut). Bounded in wall-clock time too:
        if frames stop arriving, the no-input or maximum-length deadline still ends the call.
        """
        cfg = self.cfg
        ep = Endpointer(aggressiveness=cfg.vad_aggressiveness, end_silence_ms=end_silence_ms or cfg.end_silence_ms,
                        no_input_ms=no_input_ms or cfg.no_input_timeout_ms, max_ms=max_ms or cfg.max_utterance_ms)
        loop = asyncio.get_running_loop()
        hint_list = hints if hints is not None else self.default_hints
        stream: SttStream | _ProcStream | None = None
        try:
            engine_name, streaming = await self._engine_info()
            # A streaming engine is fed while the caller speaks; the others decode the endpointed utterance.
            if streaming and grammar is None and closed is not None:
                # A streaming engine (vosk) cannot score phrases; its grammar mode is its closed recognition.
                grammar = list(closed.choices)
            if streaming:
                if self._pool is not None:
                    stream = _ProcStream(self._pool.stt_worker())
                    await stream.open(hint_list, grammar)
                else:
                    stream = self.stt.stream(hint_list, grammar)
        except Exception as exc:
            log.exception("speech-to-text unavailable")
            return ListenResult(status="error", error=str(exc))
        pending: list[bytes] = []
        framer = Framer()
        event: str | None = None
        # Wall-clock bounds on *waiting for audio* (not on our own processing, which may lag under load):
        # a gap of no_input_ms without any frame, or more waiting in total than the call could need.
        gap_s = ep.no_input_ms / 1000
        wait_budget = (ep.no_input_ms + ep.max_ms) / 1000 + 2.0
        waited = 0.0
        # Early commit (non-streaming engines, an open question with a judge, no explicit end silence: a
        # recording's end is the caller's to choose).
        # Not for closed questions: "No... lo sé" would be committed as "no" on the pause.
        early = (stream is None and accept is not None and closed is None and end_silence_ms is None
                 and cfg.early_commit_ms > 0)
        ahead: asyncio.Task[tuple[SttResult, bool]] | None = None
        ahead_frames = 0  # utterance frames the ahead decode covers
        committed: SttResult | None = None

        async def decode_ahead(pcm: bytes) -> tuple[SttResult, bool]:
            res = await self._decode(pcm, hint_list, grammar, second=False)
            assert res is not None
            return res, bool(res.text) and await self._judge(accept, res.text) if accept is not None else False

        async def push(batch: list[bytes]) -> None:
            assert stream is not None
            if isinstance(stream, _ProcStream):
                partial = await stream.accept(b"".join(batch))
            else:
                partial = await loop.run_in_executor(self._stt_pool, stream.accept, b"".join(batch))
            if partial and on_partial is not None:
                on_partial(partial)

        it = aiter(frames)
        try:
            while event not in ("end", "no_input", "max_length"):
                t = loop.time()
                try:
                    chunk = await asyncio.wait_for(anext(it), min(gap_s, max(wait_budget - waited, 0.01)))
                except StopAsyncIteration:
                    break
                waited += loop.time() - t
                for frame in framer.push(chunk):
                    event = ep.feed(frame)
                    if stream is not None and ep.in_speech:
                        # On the start event, the pre-roll and first voiced frames go in one piece.
                        pending.append(ep.utterance() if event == "speech" else frame)
                        if len(pending) >= 5:  # 100 ms per trip to the worker
                            await push(pending)
                            pending = []
                    if early and ep.in_speech and event is None:
                        if ep.silence_ms == 0 and ahead is not None and ahead_frames < ep.utterance_frames:
                            # The caller went on talking: that decode is stale; cancelled, it leaves the worker
                            # queue if it has not started (it would delay everyone's next transcript).
                            ahead.cancel()
                            ahead = None
                        elif (ahead is None and ep.silence_ms >= cfg.early_commit_ms
                              and ep.speech_frames * 20 >= cfg.early_commit_min_speech_ms):
                            ahead_frames = ep.utterance_frames
                            ahead = asyncio.create_task(decode_ahead(ep.utterance()))
                        elif ahead is not None and ahead.done() and ep.silence_ms > 0 and not ahead.cancelled():
                            res, ok = ahead.result()
                            if ok:
                                committed, event = res, "end"
                                break
                    if event in ("end", "no_input", "max_length"):
                        break
        except TimeoutError:
            pass  # frames stopped coming
        except Exception as exc:  # the audio source failed (hangup mid-read...): decide on what was heard
            log.warning("audio stream ended with an error: %s", exc)
        if event not in ("end", "no_input", "max_length"):
            event = ep.finish()
        if event == "no_input":
            if isinstance(stream, _ProcStream):
                await stream.worker.call("drop", stream.sid)
            return ListenResult(status="no_input", engine=engine_name)
        t_end = time.perf_counter()
        try:
            if committed is not None:
                result = committed
            elif stream is not None:
                if pending:
                    await push(pending)
                if isinstance(stream, _ProcStream):
                    result = await stream.final()
                else:
                    result = await loop.run_in_executor(self._stt_pool, stream.final)
            else:
                first: SttResult | None = None
                if ahead is not None and ahead_frames >= ep.speech_end_frames:
                    # Nothing was said after the ahead decode: its transcript is this utterance's.
                    with_ok = await ahead
                    first = with_ok[0]
                result = await self._checked(ep.utterance(), hint_list, grammar, accept, first, closed)
        except Exception as exc:
            log.exception("speech-to-text failed")
            return ListenResult(status="error", engine=engine_name, speech_ms=ep.speech_ms, error=str(exc))
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
        latency = (time.perf_counter() - t_end) * 1000
        status: ListenStatus = "max_length" if event == "max_length" else ("ok" if result.text else "no_match")
        return ListenResult(status=status, text=result.text, confidence=result.confidence,
                            alternatives=result.alternatives, engine=engine_name, speech_ms=ep.speech_ms,
                            latency_ms=round(latency, 1), second_opinion=result.second_opinion,
                            early=committed is not None, chosen=result.chosen,
                            margin=result.margin if result.chosen else 0.0,
                            raw_text=result.raw_text if result.chosen else None)

    async def transcribe(self, pcm8k: bytes, hints: list[str] | None = None) -> SttResult:
        """A whole recording (voicemail): 8 kHz 16-bit mono, cut at speech.max_transcribe_ms."""
        limit = self.cfg.max_transcribe_ms * RATE // 1000 * 2
        truncated = len(pcm8k) > limit
        data = pcm8k[:limit]
        data = data[:len(data) - len(data) % 2]  # an odd trailing byte is not a sample
        hint_list = hints if hints is not None else self.default_hints
        pool = self._pool
        if pool is not None:
            # Counted in the worker's backlog (about one utterance's decode per 3 s of audio), so a long voicemail
            # being transcribed turns new questions to the keypad rather than making them wait behind it.
            cost = pool.decode_s * max(1.0, len(data) / 16000 / 3)
            res: SttResult
            # The worker's one decode operation, as for an utterance (the PCM as it is: half the bytes of floats).
            res, _ = await pool.stt_worker().call_timed("transcribe", data, hint_list, None, False,
                                                        within=max(60.0, len(data) / 16000 * 2), cost_s=cost)
        else:
            audio = to_float(data)
            res = await asyncio.get_running_loop().run_in_executor(
                self._stt_pool, lambda: self.stt.transcribe(audio, RATE, hint_list))
        res.truncated = truncated
        return res

    # ---- synthesis ----

    async def synth(self, text: str) -> AsyncIterator[bytes]:
        """20 ms frames of 8 kHz 16-bit PCM; the first ones as soon as the first sentence is rendered.

        A text synthesised before plays from the prompt cache at once. Stop iterating at any time (barge-in):
        rendering stops after the current sentence.
        """
        cache = self.cache if self.cfg.prompt_cache else None
        if cache is not None:
            known = cache.peek(text)
            if known is not None:
                for frame in known:
                    yield frame
                return
        rendered: list[bytes] = []
        complete = False
        if self._pool is not None:
            async for part in self._pool.tts_worker().stream_parts("synth", text):
                rendered += part
                for frame in part:
                    yield frame
            complete = True
        else:
            async for frame in self._synth_threads(text):
                rendered.append(frame)
                yield frame
            complete = True
        if complete and cache is not None and rendered:
            # Kept for the next caller (every caller hears the greeting and the same answers); the file write
            # goes to a thread.
            await asyncio.get_running_loop().run_in_executor(self._tts_pool, cache.put, text, rendered)

    async def _synth_threads(self, text: str) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[bytes] | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            batch: list[bytes] = []
            try:
                for frame in frames_8k(self.tts, text):
                    if stop.is_set():
                        return
                    batch.append(frame)
                    if len(batch) >= 10:
                        loop.call_soon_threadsafe(queue.put_nowait, batch)
                        batch = []
                if batch:
                    loop.call_soon_threadsafe(queue.put_nowait, batch)
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # handed to the consumer, which raises it
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        fut = loop.run_in_executor(self._tts_pool, produce)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                for frame in item:
                    yield frame
        finally:
            stop.set()
            if fut.done():
                fut.result()

    async def prompt(self, text: str) -> list[bytes]:
        """A fixed prompt's frames, rendered once per voice and text (prompt cache)."""
        loop = asyncio.get_running_loop()
        if not self.cfg.prompt_cache:
            return [f async for f in self.synth_uncached(text)]
        known = self.cache.peek(text)
        if known is not None:
            return known
        render = self._render_blocking(loop)
        return await loop.run_in_executor(self._tts_pool, self.cache.get, text, render)

    async def synth_uncached(self, text: str) -> AsyncIterator[bytes]:
        if self._pool is not None:
            async for part in self._pool.tts_worker().stream_parts("synth", text):
                for frame in part:
                    yield frame
        else:
            async for frame in self._synth_threads(text):
                yield frame

    async def sync_prompts(self, texts: list[str]) -> dict[str, int]:
        """Render the flows' fixed prompts ahead of time and drop stale cache files (config change)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tts_pool, self.cache.sync, texts, self._render_blocking(loop))

    def _render_blocking(self, loop: asyncio.AbstractEventLoop) -> Callable[[str], bytes]:
        """A render function for the cache's thread: in the TTS worker (waited for from the thread) or here."""
        pool = self._pool
        if pool is None:
            return self._render_pcm

        def render(text: str) -> bytes:
            out: bytes = asyncio.run_coroutine_threadsafe(pool.tts_worker().call("render", text), loop).result(120)
            return out
        return render

    def _render_pcm(self, text: str) -> bytes:
        return b"".join(frames_8k(self.tts, text))
