"""The IVR over a phone call: prompts through speech synthesis, answers through recognition, keys as DTMF.

One task reads the call's audio into a queue for the whole call, so nothing the caller says is
lost between a prompt and the next question. While a prompt plays, the frames go through the
speech area's barge-in detector: caller speech of at least the prompt's `barge_in_ms` (a cough or a
"¿hola?" is shorter) stops the prompt, and the frames heard since are handed to the next `listen`, so the
first words are not cut. A prompt with `barge_in` off (a legal notice) is not stopped by speech; a key
always stops any prompt. Voicemail instructions stop when the caller starts the message over them, and the
recording then starts with the caller's first words (the pre-roll), not at a beep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, runtime_checkable

from core.audio import BYTES_PER_SECOND, FRAME_BYTES, RATE, Frame, put_dropping_oldest
from ivr.contact import Ask, CallerGone, Choice, Heard, Recorded
from ivr.ports import CallLeg, Speech

log = logging.getLogger(__name__)

PREROLL_FRAMES = 75  # 1.5 s kept from before a question: speech that barged in continues into the answer
QUEUE_FRAMES = 1500  # 30 s: what the caller says while we think is kept, older audio is dropped
INTER_DIGIT_S = 3.0
SPOKEN_CHARS_PER_S = 15.0  # espeak-ng at 160 words a minute: how long a question takes to say
KEYPAD_INSTEAD = "En este momento no puedo atenderle por voz. Elija con el teclado."


@runtime_checkable
class Admission(Protocol):
    """A speech service that knows its capacity (speech.service.Speech): True when a new utterance would wait
    past the recognition budget."""

    def overloaded(self, in_s: float = 0.0) -> bool: ...


def _beep(ms: int = 300, freq: float = 1000.0) -> list[bytes]:
    n = RATE * ms // 1000
    samples = [int(8000 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n)]
    pcm = struct.pack(f"<{n}h", *samples)
    return [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


class CallIO:
    channel = "voice"

    def __init__(self, call: CallLeg, speech: Speech) -> None:
        self.call = call
        self.speech = speech
        self.caller = str(call.caller)
        self._frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_FRAMES)
        # Bounded like the call's own digit queue: the line caps a flood at 20 digits/s, but nothing reads them
        # while a prompt without a question plays.
        self._digits: asyncio.Queue[str | None] = asyncio.Queue(maxsize=64)
        self._preroll: deque[bytes] = deque(maxlen=PREROLL_FRAMES)
        self._barged = False  # the caller started talking over a prompt; the next question listens at once
        self._tasks = [asyncio.create_task(self._pump_audio(), name=f"audio-{call.call_id}"),
                       asyncio.create_task(self._pump_dtmf(), name=f"dtmf-{call.call_id}")]

    @property
    def ended(self) -> bool:
        return bool(self.call.ended.is_set())

    def _gone(self) -> None:
        if self.ended:
            raise CallerGone()

    async def _pump_audio(self) -> None:
        try:
            async for frame in self.call.audio():
                put_dropping_oldest(self._frames, frame)  # keep the newest 30 s
        finally:
            put_dropping_oldest(self._frames, None)

    async def _pump_dtmf(self) -> None:
        try:
            async for digit in self.call.dtmf():
                put_dropping_oldest(self._digits, digit)
        finally:
            put_dropping_oldest(self._digits, None)  # the end must always get in

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- prompts --------------------------------------------------------------------------------

    async def say(self, text: str, *, cached: bool = False, barge_in: bool = True,
                  barge_in_ms: int | None = None) -> None:
        self._gone()
        frames: list[Frame] | AsyncIterator[Frame] = await self.speech.prompt(text) if cached else self.speech.synth(text)
        await self._play(frames, barge_in=barge_in, barge_in_ms=barge_in_ms)

    async def _play(self, frames: list[Frame] | AsyncIterator[Frame], *, barge_in: bool,
                    barge_in_ms: int | None = None) -> bool:
        """Play while watching the caller; True when the caller barged in (speech or a key).

        `barge_in` is about speech; a key stops every prompt (the keypad is how a caller who cannot be
        understood gets through, and nobody presses one by accident while listening)."""
        if self._barged:  # the caller is already talking: play without taking their words off the queue
            await self.call.play(frames, interrupt_on_dtmf=True)
            self._gone()
            return True
        play = asyncio.create_task(self.call.play(frames, interrupt_on_dtmf=True))
        detector = self.speech.BargeIn()
        if barge_in_ms is not None:
            detector.set_min_speech_ms(barge_in_ms)
        if barge_in:
            # Speech that began over the previous prompt (the welcome, which a short word does not stop) counts
            # here too: a fresh detector would see only the word's tail, and the word would be lost (measured:
            # "cero" said across the welcome and the question came back as "Salud.").
            for recent in list(self._preroll)[-25:]:
                detector.feed(recent)
        barged = False
        try:
            if barge_in and detector.triggered:
                barged = self._barged = True
                self.call.stop_playback()
            while not play.done() and not barged:
                try:
                    frame = await asyncio.wait_for(self._frames.get(), 0.1)
                except TimeoutError:
                    continue
                if frame is None:
                    self._frames.put_nowait(None)
                    break
                self._preroll.append(frame)
                if barge_in and detector.feed(frame):
                    barged = self._barged = True
                    self.call.stop_playback()
                    break  # the rest of the caller's words stay queued for the next listen
            with contextlib.suppress(Exception):
                await play
        finally:
            if not play.done():
                self.call.stop_playback()
                play.cancel()
        self._gone()
        return barged or not self._digits.empty()

    # ---- answers --------------------------------------------------------------------------------

    async def _listen_frames(self, tee: bytearray | None = None,
                             sink: Callable[[bytes], None] | None = None) -> AsyncIterator[bytes]:
        while self._preroll:
            frame = self._preroll.popleft()
            if tee is not None:
                tee.extend(frame)
            if sink is not None:
                sink(frame)
            yield frame
        while True:
            live = await self._frames.get()
            if live is None:
                self._frames.put_nowait(None)
                return
            if tee is not None:
                tee.extend(live)
            if sink is not None:
                sink(live)
            yield live

    async def _keys(self, first: str, ask: Ask) -> Heard:
        digits = first
        while True:
            if ask.finish_key and digits.endswith(ask.finish_key):
                digits = digits[:-1]
                break
            if ask.num_digits and len(digits) >= ask.num_digits:
                break
            try:
                d = await asyncio.wait_for(self._digits.get(), INTER_DIGIT_S)
            except TimeoutError:
                break
            if d is None:
                break
            digits += d
        return Heard(kind="dtmf", digits=digits) if digits else Heard(kind="no_input")

    def _speech_overloaded(self, ask: Ask) -> bool:
        """Asked before the question plays: decodes queued now drain while the caller hears it and answers
        (about 15 characters a second of speech, then at least 1 s of answer and end silence)."""
        in_s = (0.0 if self._barged else len(ask.text) / SPOKEN_CHARS_PER_S) + 1.0
        return isinstance(self.speech, Admission) and self.speech.overloaded(in_s)

    async def _keypad_instead(self, ask: Ask) -> Heard:
        """Recognition is over its wait budget: say so and offer the question's options on the keypad, rather
        than leave the caller in silence while their words wait for a decoder."""
        log.warning("speech over capacity on call %s: keypad offered instead of listening", self.call.call_id)
        self._barged = False
        self._preroll.clear()
        options = " ".join(f"Para {label}, pulse {key}." for key, label in ask.options)
        await self.say(f"{KEYPAD_INSTEAD} {options}", barge_in=True)
        if not self._digits.empty():
            first = self._digits.get_nowait()
        else:
            try:
                first = await asyncio.wait_for(self._digits.get(), ask.timeout_s)
            except TimeoutError:
                return Heard(kind="no_input")
        if first is None:
            raise CallerGone()
        return await self._keys(first, ask)

    async def gather(self, ask: Ask) -> Heard:
        self._gone()
        offer_keys = "dtmf" in ask.input and "speech" in ask.input and bool(ask.options)
        if offer_keys and self._speech_overloaded(ask):
            return await self._keypad_instead(ask)
        # A key pressed over an earlier prompt (the welcome) answers this question: the caller knows the menu and
        # typed ahead, so the question is not played to them in full first.
        typed_ahead = "dtmf" in ask.input and not self._digits.empty()
        if ask.text and not self._barged and not typed_ahead:
            await self.say(ask.text, cached=ask.cached, barge_in=ask.barge_in,
                           barge_in_ms=ask.barge_in_ms)
        self._barged = False
        if "dtmf" in ask.input and not self._digits.empty():
            first = self._digits.get_nowait()
            if first is None:
                raise CallerGone()
            return await self._keys(first, ask)
        if "speech" not in ask.input:
            self._preroll.clear()
            try:
                first = await asyncio.wait_for(self._digits.get(), ask.timeout_s)
            except TimeoutError:
                return Heard(kind="no_input")
            if first is None:
                raise CallerGone()
            return await self._keys(first, ask)
        listen = asyncio.create_task(self.speech.listen(
            self._listen_frames(), hints=ask.hints or None, grammar=ask.grammar,
            no_input_ms=int(ask.timeout_s * 1000), max_ms=int(ask.max_s * 1000), accept=ask.accept,
            closed=ask.closed))
        waiters: list[asyncio.Task[Any]] = [listen]
        key: asyncio.Task[str | None] | None = None
        if "dtmf" in ask.input:
            key = asyncio.create_task(self._digits.get())
            waiters.append(key)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if key is not None and not key.done():
                key.cancel()
        if key is not None and key.done() and not key.cancelled():
            listen.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listen
            first = key.result()
            if first is None:
                raise CallerGone()
            return await self._keys(first, ask)
        res = listen.result()
        self._gone()
        if res.status in ("ok", "max_length") and res.text.strip():
            chosen = Choice(value=res.text, margin=res.margin, transcribed=res.raw_text or "") if res.chosen else None
            return Heard(kind="speech", text=res.text, confidence=float(res.confidence), engine=res.engine,
                         chosen=chosen)
        if res.status == "no_match":
            return Heard(kind="speech", text="", confidence=0.0, engine=res.engine)
        if res.status == "error":
            log.warning("speech recognition failed on call %s: %s", self.call.call_id, res.error)
        return Heard(kind="no_input", engine=res.engine)

    async def record(self, text: str, *, max_s: float, end_silence_s: float,
                     sink: Callable[[bytes], None] | None = None) -> Recorded:
        self._barged = False
        frames: AsyncIterator[Frame] = self.speech.synth(text)
        if await self._play(frames, barge_in=True):
            # The caller began the message over the instructions: no beep over their words, and the recording
            # starts where they started (the frames kept since the prompt began, up to PREROLL_FRAMES), not
            # at the beep: issue 17 measured a 12 s message begun 5 s early stored as its last 7 s.
            self._barged = False
            self._trim_preroll()
        else:
            await self._play(_beep(), barge_in=False)
            self._preroll.clear()
        audio = bytearray()
        res = await self.speech.listen(self._listen_frames(tee=audio, sink=sink), no_input_ms=8000,
                                       end_silence_ms=int(end_silence_s * 1000), max_ms=int(max_s * 1000))
        if res.status == "no_input":
            return Recorded(text="", confidence=0.0, audio=None)
        text_out = res.text
        if len(audio) > BYTES_PER_SECOND * 12:  # longer than the endpointer's utterance: transcribe the whole recording
            with contextlib.suppress(Exception):
                whole = await self.speech.transcribe(bytes(audio))
                text_out = whole.text or text_out
        return Recorded(text=text_out, confidence=float(res.confidence), audio=bytes(audio),
                        duration_s=len(audio) / BYTES_PER_SECOND)

    def _trim_preroll(self, keep_silence: int = 15) -> None:
        """Drop the pre-roll's frames from before the caller's speech began (the instructions' quiet), keeping
        `keep_silence` (300 ms) before the first voiced one so the first syllable is whole."""
        detector = self.speech.BargeIn()
        frames = list(self._preroll)
        first = next((i for i, f in enumerate(frames) if detector.voiced(f)), 0)
        for _ in range(max(0, first - keep_silence)):
            self._preroll.popleft()

    async def bridge(self, other: CallLeg) -> None:
        """Connect the caller to another call (an agent's phone) until either side hangs up.

        The IVR's own listeners stop while bridged: the call's received audio has one reader at a time.
        """
        self._gone()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.call.bridge(other)
        finally:
            self._frames = asyncio.Queue(maxsize=QUEUE_FRAMES)
            self._digits = asyncio.Queue()
            self._tasks = [asyncio.create_task(self._pump_audio(), name=f"audio-{self.call.call_id}"),
                           asyncio.create_task(self._pump_dtmf(), name=f"dtmf-{self.call.call_id}")]

    async def hold(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.call.ended.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def transfer(self, uri: str) -> bool:
        return bool(await self.call.transfer(uri))

    async def hangup(self) -> None:
        if not self.ended:
            await self.call.hangup()
