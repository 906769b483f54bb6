"""Voicemail that becomes a ticket with a transcript and a next-business-day callback.

`DurableVoicemail` is the IVR's voicemail hook: each frame of the message goes to disk as it
arrives (`recording.VoicemailWriter`), Redis notes which messages this node is recording, and
when the message ends it is transcribed and turned into a ticket in the callback queue with a
callback due at the line's next opening. After a crash, `recover()` (run at start-up) turns
what was recorded up to the crash into the same ticket, marked incomplete.

`atiende run` recovers cut messages at start-up (`VoicemailService.recover`), then runs the callback worker.
The desk is reached through the small `VoicemailDesk` protocol, which the composition root implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from config.models import Settings
from core import logs
from core.clock import Clock
from core.errors import InvalidInput, Unavailable
from core.lease import Lease, LeaseLost, LeaseRunner
from core.store import REDIS_ERRORS, Store
from ivr import speak
from ivr.contact import CallerGone, ContactIO, Session
from ivr.hooks import TicketHook
from ivr.ports import Dialer, Speech
from routing.calendar_service import CalendarService
from telephony.errors import DialFailed
from voicemail.callback_calls import dial_outcome
from voicemail.callbacks import Callback, CallbackService, Outcome, VoicemailInfo
from voicemail.recording import Recording, VoicemailWriter, file_id, pending, read_pcm, recover, write_pending
from voicemail.storage import RecordingStore

log = logging.getLogger(__name__)
PROMPT = ("Deje su mensaje después de la señal, indicando su nombre y el motivo de su consulta. "
          "Cuando termine, puede colgar.")
MIN_MESSAGE_S = 0.5


class VoicemailPending(Exception):
    """The message is safe on disk but not filed yet: the store is away."""


FILED = ("done", "incomplete")  # the voicemail note's status once ticket and callback are stored and replicated


def audio_url(call_id: str) -> str:
    return f"/api/v1/voicemails/{call_id}/audio"


def callback_id_for(call_id: str) -> str:
    """The id of a voicemail's callback: the same on every try of filing it, so a retry cannot make a second one."""
    return "vm" + hashlib.sha256(call_id.encode()).hexdigest()[:10]


class VoicemailDesk(Protocol):
    """What voicemail needs of the desk."""

    async def file_voicemail(self, *, caller: str, queue: str, subject: str, transcript: str, due: datetime,
                             trace_id: str | None, data: dict[str, Any], meta: dict[str, Any]) -> tuple[str, bool]:
        """Open the voicemail's ticket (the message as its first interaction, `data` its details); returns the
        reference and whether the caller's number identifies a citizen we can call back."""
        ...

    async def status_text(self, ref: str, spoken: bool = False) -> str | None: ...

    async def note_callback_attempt(self, ref: str, callback_id: str, outcome: str, note: str) -> None: ...


class VoicemailService:
    def __init__(self, settings: Callable[[], Settings], store: Store, clock: Clock, speech: Speech,
                 desk: VoicemailDesk, callbacks: CallbackService, recordings: RecordingStore) -> None:
        self.recordings = recordings
        self._settings = settings
        self._store = store
        self._clock = clock
        self._speech = speech
        self._desk = desk
        self.callbacks = callbacks

    @property
    def _data_dir(self) -> Path:
        return self._settings().service.data_dir

    async def _mark(self, call_id: str, doc: dict[str, Any] | None) -> None:
        r, k = self._store.redis, self._store.keys
        node = self._settings().service.node_id
        if doc is None:
            await r.srem(k.voicemails_recording(node), call_id)
            return
        async with r.pipeline(transaction=True) as pipe:
            pipe.set(k.voicemail(call_id), json.dumps(doc, ensure_ascii=False, default=str))
            pipe.sadd(k.voicemails_recording(node), call_id)
            await pipe.execute()

    async def forget(self, call_id: str) -> None:
        """A message with nothing in it: no longer being recorded (best effort; a leftover mark is harmless)."""
        with contextlib.suppress(*REDIS_ERRORS):
            await self._mark(file_id(call_id), None)

    async def begin(self, call_id: str, *, caller: str, trace_id: str, queue: str) -> VoicemailWriter:
        # The message is filed under its file id (the Call-ID when it is a safe name), which recovery reads back
        # from the file name: its note must be under the same id.
        call_id = file_id(call_id)
        writer = await asyncio.to_thread(VoicemailWriter, self._data_dir, call_id)
        try:
            await self._mark(call_id, {"call_id": call_id, "caller": caller, "trace_id": trace_id, "queue": queue,
                                       "status": "recording", "started_at": self._clock.now().isoformat(),
                                       "node": self._settings().service.node_id})
        except REDIS_ERRORS as exc:
            # The message goes to disk all the same; it is filed when the store is back.
            log.warning("voicemail recorded without the store", extra=logs.fields(call_id=call_id, error=str(exc)))
        return writer

    async def complete(self, rec: Recording, *, caller: str, trace_id: str | None, queue: str, transcript: str = "",
                       confidence: float = 0.0, priority: int | None = None) -> tuple[str, Callback]:
        """Transcribe (if not done), create the ticket and its callback, note the result in Redis.

        With the store away, raises `VoicemailPending` after writing the message's sidecar to disk: nothing is
        lost, and `file_pending` files it later."""
        try:
            return await self._complete(rec, caller=caller, trace_id=trace_id, queue=queue, transcript=transcript,
                                        confidence=confidence, priority=priority)
        except (*REDIS_ERRORS, Unavailable) as exc:
            meta = {"caller": caller, "trace_id": trace_id, "queue": queue, "transcript": transcript,
                    "confidence": confidence, "priority": priority}
            await asyncio.to_thread(write_pending, self._data_dir, rec, meta)
            log.warning("voicemail kept on disk until the store is back",
                        extra=logs.fields(call_id=rec.call_id, error=str(exc)))
            raise VoicemailPending(rec.call_id) from exc

    async def file_pending(self) -> list[str]:
        """File the messages recorded while the store was away (oldest first); stops at the first store failure."""
        refs: list[str] = []
        for sidecar, meta in await asyncio.to_thread(pending, self._data_dir):
            path = Path(str(meta.get("path", "")))
            if not await asyncio.to_thread(path.is_file):
                log.error("pending voicemail without its recording", extra=logs.fields(sidecar=str(sidecar)))
                continue
            rec = Recording(call_id=str(meta["call_id"]), path=path, duration_s=float(str(meta.get("duration_s", 0))),
                            sha256=str(meta.get("sha256", "")), complete=bool(meta.get("complete", True)))
            priority = meta.get("priority")
            try:
                ref, _ = await self._complete(
                    rec, caller=str(meta.get("caller") or ""), trace_id=str(meta["trace_id"]) if meta.get("trace_id") else None,
                    queue=str(meta.get("queue") or self._settings().voicemail.queue),
                    transcript=str(meta.get("transcript") or ""), confidence=float(str(meta.get("confidence") or 0)),
                    priority=priority if isinstance(priority, int) else None)
                refs.append(ref)
            except ValueError:
                pass  # filed without a callback (no caller number)
            except (*REDIS_ERRORS, Unavailable):
                break
            await asyncio.to_thread(sidecar.unlink, missing_ok=True)
            log.info("pending voicemail filed", extra=logs.fields(call_id=rec.call_id))
        return refs

    async def _complete(self, rec: Recording, *, caller: str, trace_id: str | None, queue: str, transcript: str,
                        confidence: float, priority: int | None) -> tuple[str, Callback]:
        """File the message once, whatever fails on the way and however often it is retried.

        The ticket is made by the desk and its reference noted here afterwards, so a failure between the two (a lost
        connection, NotDurable, a kill) must not make a second ticket on the retry. Before filing, the voicemail's
        note records the trace the ticket will be listed under and how long that trace was; the desk lists a new
        ticket in its trace in the same step as it creates it, so a retry finds the earlier ticket there. The
        callback's id derives from the voicemail's, so it is made once too. Only once ticket and callback are on
        the replicas (`Store.durable`) is the message marked filed (and its sidecar on disk removed)."""
        r, k = self._store.redis, self._store.keys
        since = await self._store.primary() if self._store.min_replicas_ack > 0 else None
        raw = await r.get(k.voicemail(rec.call_id))
        note: dict[str, Any] = json.loads(raw) if raw else {}
        if note.get("status") in FILED:  # filed already: once only
            if not note.get("callback"):
                raise ValueError("no caller number: ticket created without a callback")
            return str(note["ticket"]), await self.callbacks.get(str(note["callback"]))
        caller = caller or str(note.get("caller") or "")  # a sidecar written while the store was away lacks it
        trace_id = trace_id or note.get("trace_id") or note.get("filing_trace") or uuid.uuid4().hex[:16]
        ref = note.get("ticket")
        if ref and not await r.exists(k.ticket(str(ref))):
            # Noted on a new primary after the ticket was lost with the old one (the try ended NotDurable): again.
            ref = None
        callable_back = bool(note.get("callable", caller))
        if not ref and note.get("filing_trace"):
            ref = await self._filed_earlier(rec.call_id, str(note["filing_trace"]), int(note.get("filing_from", 0)))
            callable_back = bool(caller)
        cb_due = await self.callbacks.next_due_time(self._clock.now())
        info = VoicemailInfo(call_id=rec.call_id, path=str(rec.path), sha256=rec.sha256, duration_s=round(rec.duration_s, 2),
                             complete=rec.complete, transcript=transcript, confidence=round(confidence, 3))
        if not ref:
            if not transcript and rec.duration_s >= MIN_MESSAGE_S:
                with contextlib.suppress(Exception):
                    pcm = await asyncio.to_thread(read_pcm, rec.path)
                    res = await self._speech.transcribe(pcm)
                    transcript, confidence = res.text, float(res.confidence)
                    info.transcript, info.confidence = transcript, round(confidence, 3)
            # Every node must be able to play it before the ticket that links it exists.
            await self.recordings.put(rec.call_id, Path(rec.path))
            note.update(filing_trace=trace_id, filing_from=int(await r.llen(k.trace(trace_id))))
            await r.set(k.voicemail(rec.call_id), json.dumps(note, ensure_ascii=False, default=str))
            subject = "Mensaje de voz" + ("" if rec.complete else " (incompleto)")
            ref, callable_back = await self._desk.file_voicemail(
                caller=caller, queue=queue, subject=subject, transcript=transcript, due=cb_due, trace_id=trace_id,
                data={"recording": audio_url(rec.call_id), "sha256": rec.sha256, "duration_s": info.duration_s,
                      "complete": rec.complete, "confidence": info.confidence, "call_id": rec.call_id},
                meta={"voicemail": rec.call_id, "incomplete": not rec.complete})
        note.update(ticket=ref, callable=callable_back, status="filing")
        await r.set(k.voicemail(rec.call_id), json.dumps(note, ensure_ascii=False, default=str))
        reason: Literal["voicemail", "overflow"] = "overflow" if priority is not None else "voicemail"
        cb = None
        if callable_back:
            try:
                cb = await self.callbacks.create(phone=caller, ticket_ref=ref, trace_id=trace_id, voicemail=info,
                                                 due_at=cb_due, reason=reason, priority=priority or 0,
                                                 callback_id=callback_id_for(rec.call_id))
                if cb.ticket_ref != ref:  # made by a try whose ticket was lost: it calls back about this one
                    cb = await self.callbacks.relink(cb.id, str(ref))
            except InvalidInput as exc:  # a caller ID we must not dial (premium, foreign, not a number): ticket only
                log.warning("voicemail without a callback", extra=logs.fields(call_id=rec.call_id, reason=exc.message))
        # A failover now must not lose what the caller was told is filed, nor what the sidecar on disk still holds.
        await self._store.durable(since)
        await r.set(k.voicemail(rec.call_id), json.dumps({
            "call_id": rec.call_id, "status": "done" if rec.complete else "incomplete", "ticket": ref,
            "callback": cb.id if cb else None, "path": str(rec.path), "sha256": rec.sha256, "trace_id": trace_id,
        }))
        await self._mark(rec.call_id, None)
        log.info("voicemail filed", extra=logs.fields(call_id=rec.call_id, ticket=ref, complete=rec.complete,
                                                       due=cb_due.isoformat()))
        if cb is None:
            raise ValueError("no caller number: ticket created without a callback")
        return str(ref), cb

    async def _filed_earlier(self, call_id: str, trace_id: str, start: int) -> str | None:
        """The ticket an interrupted earlier try made for this message: listed in its trace after `start`, with the
        voicemail's id in its meta (the trace is shared with whatever else the contact did)."""
        r, k = self._store.redis, self._store.keys
        for raw in await r.lrange(k.trace(trace_id), start, -1):
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                item = json.loads(raw)
                if item.get("kind") == "ticket":
                    ticket = json.loads(await r.get(k.ticket(str(item["id"]))) or "{}")
                    if (ticket.get("meta") or {}).get("voicemail") == call_id:
                        return str(item["id"])
        return None

    async def recover(self) -> list[str]:
        """Messages cut by a crash of this node: keep what was recorded, file them marked incomplete."""
        r, k = self._store.redis, self._store.keys
        node = self._settings().service.node_id
        recordings = await asyncio.to_thread(recover, self._data_dir)
        refs: list[str] = []
        for rec in recordings:
            # Every .part is a .wav by now: one message's failure must not leave the next ones unfiled and
            # without a sidecar. Without the store, filing reads who called from its note later.
            meta: dict[str, Any] = {}
            with contextlib.suppress(*REDIS_ERRORS):
                raw = await r.get(k.voicemail(rec.call_id))
                meta = json.loads(raw) if raw else {}
            try:
                ref, _ = await self.complete(rec, caller=str(meta.get("caller", "")), trace_id=meta.get("trace_id"),
                                             queue=str(meta.get("queue") or self._settings().voicemail.queue))
                refs.append(ref)
            except (ValueError, VoicemailPending):
                pass  # no callback for it, or it waits on disk for file_pending
            log.warning("recovered a voicemail cut by a restart", extra=logs.fields(call_id=rec.call_id))
        await r.delete(k.voicemails_recording(node))
        return refs


class DurableVoicemail:
    """The IVR's voicemail hook for calls and chats."""

    def __init__(self, service: VoicemailService, tickets: TicketHook, calendars: CalendarService,
                 settings: Callable[[], Settings], clock: Clock) -> None:
        self.service = service
        self.tickets = tickets  # chats leave a text message through the IVR's ticket hook
        self._calendars = calendars
        self._settings = settings
        self._clock = clock

    async def leave(self, session: Session, io: ContactIO, queue: str) -> str | None:
        vm = self._settings().voicemail
        queue = queue or vm.queue
        if io.channel != "voice":
            got = await io.record(PROMPT, max_s=vm.max_length_s, end_silence_s=vm.end_silence_s)
            if not got.text.strip():
                return None
            cal = await self._calendars.get()
            return str(await self.tickets.create(session, queue=queue, kind="voicemail", subject="Mensaje fuera de horario",
                                                 body=got.text, due=cal.next_open(self._clock.now())))
        writer = await self.service.begin(session.call_id, caller=session.caller, trace_id=session.trace_id, queue=queue)
        session.said.append(PROMPT)
        text, confidence, silent = "", 0.0, False
        loop = asyncio.get_running_loop()
        syncing: list[asyncio.Future[None]] = []

        def sink(frame: bytes) -> None:
            # Frames are written on the loop (a 320-byte write to the page cache); each second's fsync
            # goes to a thread so a slow disk never stalls the call's audio.
            if writer.write(frame, fsync=False):
                syncing[:] = [f for f in syncing if not f.done()]
                syncing.append(loop.run_in_executor(None, writer.fsync))

        try:
            got = await io.record(PROMPT, max_s=vm.max_length_s, end_silence_s=vm.end_silence_s, sink=sink)
            text, confidence = got.text, got.confidence
            silent = got.audio is None and not got.text  # the endpointer heard no speech at all
        except CallerGone:
            pass  # hanging up is how most callers end a message
        except BaseException:
            writer.abort()  # the .part stays; recover() files it at the next start
            raise
        await asyncio.gather(*syncing, return_exceptions=True)
        rec = await asyncio.to_thread(writer.finish)
        if silent or rec.duration_s < MIN_MESSAGE_S:
            # Nothing said: no ticket, no callback.
            await asyncio.to_thread(Path(rec.path).unlink, missing_ok=True)
            await self.service.forget(session.call_id)
            return None
        # A caller who waited in a queue and overflowed keeps their place as the callback's priority.
        position = session.vars.get("queue_position")
        try:
            ref, _ = await self.service.complete(rec, caller=session.caller, trace_id=session.trace_id, queue=queue,
                                                 transcript=text, confidence=confidence,
                                                 priority=int(position) if isinstance(position, int) else None)
        except VoicemailPending:
            session.vars["voicemail_pending"] = True
            return None
        return ref


# ---- the callback worker ------------------------------------------------------------------------

WORKER = "worker"
CALL_HOLD_S = 600.0  # beyond the ring timeout: the message played, the hang-up, the outcome written
ADOPT_EVERY_S = 600.0  # how often the worker looks for claims an older version left without a deadline

CALLBACK_PROMPT = ("Buenos días. Le llamamos del servicio de {line} en respuesta a su mensaje, "
                   "referencia {ref}. {status}")


class CallbackWorker:
    """Places due callbacks as outbound calls when `voicemail.auto_dial` is on; agents take them otherwise."""

    def __init__(self, settings: Callable[[], Settings], callbacks: CallbackService, speech: Speech,
                 desk: VoicemailDesk) -> None:
        """Calls go out once `dialer` is set (the line's SIP endpoint, when it runs)."""
        self._settings = settings
        self.callbacks = callbacks
        self._speech = speech
        self._desk = desk
        self.dialer: Dialer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self, runner: LeaseRunner | None = None) -> None:
        """Run the worker; with `runner`, only while this node holds its lease (one worker across the nodes, and
        another node's takes over within the lease's TTL when this one dies). Its claims carry the lease's fencing
        check, so a holder that lost the lease without knowing it (paused, cut off) takes nothing."""
        if runner is None:
            self._task = asyncio.create_task(self._loop(), name="callback-worker")
        else:
            self._task = asyncio.create_task(runner.run(self._loop), name="callback-worker")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self, lease: Lease | None = None) -> None:
        interval = self._settings().voicemail.worker_interval_s
        adopted_at: float | None = None
        while not self._stop.is_set():
            try:
                # With or without auto_dial (agents may be the ones dialling), claims made by an older version, which
                # have no deadline, get one: at the start of each lease (an upgrade restarts the nodes) and now and
                # then after it (a node still on the older version may claim meanwhile).
                now = asyncio.get_running_loop().time()
                if adopted_at is None or now - adopted_at >= ADOPT_EVERY_S:
                    try:
                        await self.callbacks.adopt_unindexed(holds={WORKER: self._hold()})
                        adopted_at = now
                    except REDIS_ERRORS as exc:  # the store away: next round
                        log.warning("callback worker could not look for unindexed claims: %s", exc)
                if self._settings().voicemail.auto_dial and self.dialer is not None:
                    await self.run_once(lease)
            except LeaseLost as exc:
                log.warning("callback worker stops: %s", exc)
                return  # the runner competes for the lease again
            except Exception:
                log.exception("callback worker round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def _hold(self) -> timedelta:
        """The worker's claims outlive the longest call it places; a node killed mid-call leaves one to be reclaimed."""
        return timedelta(seconds=self._settings().voicemail.dial_ring_timeout_s + CALL_HOLD_S)

    async def run_once(self, lease: Lease | None = None) -> Callback | None:
        cb = await self.callbacks.claim_next(WORKER, lease=lease, hold=self._hold())
        if cb is None:
            return None
        with logs.bound(trace_id=cb.trace_id, ticket_id=cb.ticket_ref):
            try:
                outcome, note = await self.place(cb)
            except BaseException:
                # Stopping (drain, lost lease) or a fault before an outcome: give the callback back now, not when
                # its claim runs out; shielded, as the cancellation that brought us here would cancel it too.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.callbacks.release(cb.id, WORKER))
                raise
            # The call was made: its outcome is recorded even when the worker is being stopped meanwhile.
            return await asyncio.shield(self._record(cb, outcome, note))

    async def place(self, cb: Callback) -> tuple[Outcome, str]:
        if self.dialer is None:
            return "no_answer", "no SIP line on this node"
        try:
            call = await self.dialer.dial(cb.phone, ring_timeout=self._settings().voicemail.dial_ring_timeout_s,
                                          trace_id=cb.trace_id)
        except DialFailed as exc:
            return dial_outcome(exc), str(exc)
        try:
            status = ""
            if cb.ticket_ref:
                with contextlib.suppress(Exception):
                    status = await self._desk.status_text(cb.ticket_ref, spoken=True) or ""
            text = CALLBACK_PROMPT.format(line=self._settings().service.line_name,
                                          ref=speak.chars_spoken(cb.ticket_ref or ""), status=status)
            await call.play(self._speech.synth(text), interrupt_on_dtmf=False)
            return "reached", "mensaje automático reproducido"
        finally:
            with contextlib.suppress(Exception):
                await call.hangup()

    async def _record(self, cb: Callback, outcome: Outcome, note: str) -> Callback:
        done = await self.callbacks.record_attempt(cb.id, outcome, WORKER, note)
        if cb.ticket_ref:
            with contextlib.suppress(Exception):
                await self._desk.note_callback_attempt(cb.ticket_ref, cb.id, outcome, note)
        return done

