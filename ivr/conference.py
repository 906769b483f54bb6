"""A bridged agent call as the node serving it controls it: a supervisor who joins (listen, whisper, barge) and
the recording of the conversation, both asked for through the store by whichever node served the API request.

Who hears whom (`routes`):

| mode    | the caller hears    | the agent hears         | the supervisor hears |
|---------|---------------------|-------------------------|----------------------|
| listen  | agent               | caller                  | caller + agent       |
| whisper | agent               | caller + supervisor     | caller + agent       |
| barge   | agent + supervisor  | caller + supervisor     | caller + agent       |

The recording is what the caller hears plus the caller: caller and agent, and the supervisor only when barging
(a whisper is for the agent alone). It is written to `<data dir>/voicemail/<recording id>.wav` (the voicemails'
directory: the same retention sweep and the same `RecordingStore` put it where every node reads it); while the
agent pauses it nothing is written, and the pause is noted with its offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from redis.exceptions import RedisError

from core.audio import FRAMES_PER_SECOND, RATE, SAMPLE_BYTES, Frame
from core.clock import Clock
from core.store import REDIS_ERRORS, Store
from ivr.ports import CallLeg, Dialer
from telephony.call import Call
from telephony.errors import DialFailed
from telephony.mixer import Conference

log = logging.getLogger(__name__)

Mode = Literal["listen", "whisper", "barge"]
MODES: tuple[Mode, ...] = ("listen", "whisper", "barge")
RECORDING_PREFIX = "rec-"  # recording ids: "rec-" + 20 hex digits, never a call id (the voicemail route refuses them)
_FORGET_REQUEST = """
local raw = redis.call('GET', KEYS[1])
if not raw or ARGV[1] == '' then return 0 end
local ok, doc = pcall(cjson.decode, raw)
if ok and type(doc) == 'table' and doc['id'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
LIVE_TTL_S = 30  # a node that dies stops refreshing its calls' live entries: they vanish from the wallboard
# What the bridge treats as "the store is away": besides a lost connection, a Redis that answers but refuses writes
# (ResponseError: NOREPLICAS under min-replicas-to-write, OOM under noeviction, MISCONF when it cannot persist).
# The conversation goes on without the store; its requests and wallboard entry wait for it.
STORE_AWAY: tuple[type[BaseException], ...] = (*REDIS_ERRORS, RedisError)


def routes(caller: str, agent: str, supervisor: str | None, mode: Mode | None) -> dict[str, set[str]]:
    """Who hears whom (see the module's table); without a supervisor, caller and agent hear each other."""
    out = {caller: {agent}, agent: {caller}}
    if supervisor is None or mode is None:
        return out
    out[supervisor] = {caller, agent}
    if mode in ("whisper", "barge"):
        out[agent].add(supervisor)
    if mode == "barge":
        out[caller].add(supervisor)
    return out


def recorded(caller: str, agent: str, supervisor: str | None, mode: Mode | None) -> set[str]:
    """What the recording holds: the conversation the caller takes part in."""
    return {caller, agent} | ({supervisor} if supervisor is not None and mode == "barge" else set())


class RecordingSink(Protocol):
    """Where finished recordings go so every node reads them (voicemail.storage.RecordingStore)."""

    async def put(self, call_id: str, wav: Path) -> None: ...


@dataclass
class Pause:
    at_s: float  # offset in the recording
    paused_at: str
    resumed_at: str | None = None


@dataclass
class Recorder:
    """The mix of a bridged call in a WAV file; `sink` runs on the loop and only appends, a thread writes."""

    directory: Path
    recording_id: str
    paused: bool = False
    frames: int = 0
    pauses: list[Pause] = field(default_factory=list)
    _pending: list[Frame] = field(default_factory=list)
    _wav: wave.Wave_write | None = None

    @property
    def part(self) -> Path:
        return self.directory / f"{self.recording_id}.wav.part"

    @property
    def path(self) -> Path:
        return self.directory / f"{self.recording_id}.wav"

    @property
    def duration_s(self) -> float:
        return self.frames / FRAMES_PER_SECOND

    async def open(self) -> None:
        def create() -> wave.Wave_write:
            self.directory.mkdir(parents=True, exist_ok=True)
            w = wave.open(str(self.part), "wb")
            w.setnchannels(1)
            w.setsampwidth(SAMPLE_BYTES)
            w.setframerate(RATE)
            return w

        self._wav = await asyncio.to_thread(create)

    def sink(self, frame: Frame) -> None:
        if not self.paused:
            self._pending.append(frame)
            self.frames += 1

    def pause(self, now: str) -> None:
        if not self.paused:
            self.paused = True
            self.pauses.append(Pause(at_s=round(self.duration_s, 2), paused_at=now))

    def resume(self, now: str) -> None:
        if self.paused:
            self.paused = False
            if self.pauses:
                self.pauses[-1].resumed_at = now

    async def flush(self) -> None:
        if not self._pending or self._wav is None:
            return
        data, self._pending = b"".join(self._pending), []
        await asyncio.to_thread(self._wav.writeframesraw, data)

    async def finish(self) -> tuple[Path, str]:
        """Close the file (header patched), rename it to its final name; (path, sha256 of the file)."""
        await self.flush()
        w, self._wav = self._wav, None

        def close() -> str:
            if w is not None:
                w.close()
            os.replace(self.part, self.path)
            h = hashlib.sha256()
            with self.path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 16), b""):
                    h.update(block)
            return h.hexdigest()

        return self.path, await asyncio.to_thread(close)


class AgentHold(Protocol):
    async def hold(self, agent_id: str, item: str) -> None: ...

    async def unhold(self, agent_id: str, item: str) -> None: ...


class BridgeControl:
    """The supervisor's leg and the recorder of one bridged call, driven by what the store asks for."""

    def __init__(self, *, store: Store, clock: Clock, dialer: Dialer | None, call_id: str, trace_id: str,
                 caller: CallLeg | None, agent: CallLeg, live: dict[str, Any], ring_timeout_s: float,
                 publish: Callable[[dict[str, Any]], Any], agents: AgentHold | None = None) -> None:
        self.store, self.clock, self.dialer = store, clock, dialer
        self.call_id, self.trace_id = call_id, trace_id
        self.caller, self.agent = caller, agent
        self.live = live
        self.ring_timeout_s = ring_timeout_s
        self.publish = publish
        self.conference: Conference | None = None
        self.supervisor: CallLeg | None = None
        self.supervisor_id: str | None = None  # who (desk user) is on the supervisor's leg
        self.mode: Mode | None = None
        self.applied: str | None = None  # the id of the last supervision request acted on
        self.dialing: asyncio.Task[None] | None = None
        self.recorder: Recorder | None = None
        self.recording_meta: dict[str, Any] | None = None
        self._tap: int | None = None
        self.joined: list[str] = []  # the supervisors who were on the call, for its record
        # A supervisor's phone is in this call: while it rings or is joined, their agent record is busy so the
        # queue offers them no caller (their phone would not answer and they would be set away).
        self.agents = agents
        self.held: str | None = None

    async def _publish(self, event: dict[str, Any]) -> None:
        """Desk events are news: the store being away must not end the bridge (this runs in its poll loop)."""
        try:
            await self.publish(event)
        except STORE_AWAY as exc:
            log.warning("desk event %s of call %s not published: %s", event.get("type"), self.call_id, exc)

    # ---- the bridge's mixer -------------------------------------------------------------------------------

    async def attach(self, within_s: float = 2.0) -> bool:
        """Find the caller's bridge (set once both legs have media); False for legs without one (tests' fakes)."""
        if not isinstance(self.caller, Call):
            return False
        for _ in range(max(1, int(within_s / 0.02))):
            conf = self.caller.conference
            if conf is not None and self.agent.call_id in conf:
                self.conference = conf
                return True
            if self.caller.ended.is_set() or self.agent.ended.is_set():
                return False
            await asyncio.sleep(0.02)
        return False

    def _apply_routes(self) -> None:
        conf = self.conference
        if conf is None or self.caller is None:
            return
        sup = self.supervisor.call_id if self.supervisor is not None else None
        for leg, hears in routes(self.caller.call_id, self.agent.call_id, sup, self.mode).items():
            conf.route(leg, hears)
        if self._tap is not None:
            conf.retap(self._tap, recorded(self.caller.call_id, self.agent.call_id, sup, self.mode))

    # ---- live state for the wallboard ---------------------------------------------------------------------

    async def save_live(self) -> None:
        r, k = self.store.redis, self.store.keys
        self.live.update({"supervisor": self.supervisor_id if self.supervisor is not None else None,
                          "mode": self.mode if self.supervisor is not None else None,
                          "supervision_pending": self.dialing is not None and not self.dialing.done(),
                          "recording": self.recorder is not None,
                          "recording_paused": bool(self.recorder and self.recorder.paused)})
        with contextlib.suppress(*STORE_AWAY):
            async with r.pipeline(transaction=False) as pipe:
                pipe.set(k.call_live(self.call_id), _json(self.live), ex=LIVE_TTL_S)
                pipe.zadd(k.calls_live, {self.call_id: float(self.live.get("since_ts") or 0)})
                await pipe.execute()

    async def drop_live(self) -> None:
        r, k = self.store.redis, self.store.keys
        with contextlib.suppress(*STORE_AWAY):
            async with r.pipeline(transaction=False) as pipe:
                pipe.delete(k.call_live(self.call_id), k.call_supervise(self.call_id),
                            k.call_recording_state(self.call_id))
                pipe.zrem(k.calls_live, self.call_id)
                await pipe.execute()

    # ---- supervision ----------------------------------------------------------------------------------------

    async def supervise(self, want: dict[str, Any] | None) -> None:
        """Act on the supervision request in the store (None: none, or withdrawn)."""
        changed = False
        if self.supervisor is not None and self.supervisor.ended.is_set():
            await self._supervisor_left()
            changed = True
        if want is None or want.get("mode") not in MODES:
            if self.supervisor is not None or self.dialing is not None:
                await self._stop_supervision()
                changed = True
            self.applied = want.get("id") if want else None
            if changed:
                await self.save_live()
            return
        if want.get("id") == self.applied:
            if changed:
                await self.save_live()
            return
        self.applied = str(want.get("id"))
        mode: Mode = want["mode"]
        same_person = want.get("supervisor") == self.supervisor_id
        if (self.supervisor is not None or self.dialing is not None) and not same_person:
            await self._stop_supervision()  # another supervisor took over (the API allows it to admins only)
        self.mode = mode
        self.supervisor_id = str(want.get("supervisor") or "")
        if self.supervisor is None and self.dialing is None:
            uri = str(want.get("uri") or "")
            await self._hold(str(want.get("agent_id") or ""))
            self.dialing = asyncio.create_task(self._dial(uri), name=f"supervise-{self.call_id}")
        self._apply_routes()
        await self._publish({"type": "call.supervision", "call_id": self.call_id, "agent": self.live.get("agent"),
                            "supervisor": self.supervisor_id, "mode": mode,
                            "state": "joined" if self.supervisor is not None else "ringing"})
        await self.save_live()

    async def _dial(self, uri: str) -> None:
        """Ring the supervisor's phone and join it to the bridge. Whatever goes wrong (the phone, no RTP port, no
        bridge), the supervisor is told (`no_answer`) and nothing is left in the task for nobody to retrieve."""
        if self.dialer is None or self.conference is None or not uri:
            log.warning("supervision of %s: no line, bridge or phone to ring", self.call_id)
            await self._no_answer()
            return
        try:
            leg = await self.dialer.dial(uri, from_user="supervision", ring_timeout=self.ring_timeout_s,
                                         trace_id=self.trace_id)
        except DialFailed as exc:
            log.info("supervisor's phone %s did not answer: %s", uri, exc)
            await self._no_answer()
            return
        except Exception as exc:  # ours: no RTP port, the line going down
            log.warning("supervision of %s: dialling %s failed: %r", self.call_id, uri, exc)
            await self._no_answer()
            return
        joined = False
        try:
            joined = self.conference is not None and self.caller is not None and not self.caller.ended.is_set() \
                and not self.agent.ended.is_set() and isinstance(leg, Call) and await leg.join(self.conference, [])
        except Exception as exc:
            log.warning("supervision of %s: the supervisor's leg could not join: %r", self.call_id, exc)
        if not joined:
            with contextlib.suppress(Exception):
                await leg.hangup()
            if not self.agent.ended.is_set() and not (self.caller is not None and self.caller.ended.is_set()):
                await self._no_answer()  # the call goes on without them: their panel must not wait for good
            return
        self.supervisor = leg
        if self.supervisor_id and self.supervisor_id not in self.joined:
            self.joined.append(self.supervisor_id)
        self._apply_routes()
        log.info("supervisor %s joined call %s (%s)", self.supervisor_id, self.call_id, self.mode)
        await self._publish({"type": "call.supervision", "call_id": self.call_id, "agent": self.live.get("agent"),
                            "supervisor": self.supervisor_id, "mode": self.mode, "state": "joined"})

    async def _no_answer(self) -> None:
        await self._publish({"type": "call.supervision", "call_id": self.call_id, "agent": self.live.get("agent"),
                            "supervisor": self.supervisor_id, "mode": self.mode, "state": "no_answer"})

    async def poll_dial(self) -> None:
        """The supervisor's phone answered (or not) since the last poll: the live entry says so."""
        if self.dialing is not None and self.dialing.done():
            self.dialing = None
            if self.supervisor is None:
                await self._forget_request()
            await self.save_live()

    async def _forget_request(self) -> None:
        """The supervisor is gone (hung up, did not answer): a new request will ring again."""
        key = self.store.keys.call_supervise(self.call_id)
        with contextlib.suppress(*STORE_AWAY):
            # Compare-and-delete in one step: a request another supervisor wrote after ours must survive.
            await self.store.redis.eval(_FORGET_REQUEST, 1, key, self.applied or "")
        self.mode = None
        await self._unhold()

    @property
    def _hold_item(self) -> str:
        return f"supervise:{self.call_id}"

    async def _hold(self, agent_id: str) -> None:
        if self.agents is None or not agent_id:
            return
        try:
            await self.agents.hold(agent_id, self._hold_item)
            self.held = agent_id
        except Exception as exc:  # the call goes on without the hold: an offer may ring the supervisor's phone
            log.warning("could not mark supervisor agent %s busy: %s", agent_id, exc)

    async def _unhold(self) -> None:
        agent_id, self.held = self.held, None
        if self.agents is None or agent_id is None:
            return
        try:
            await self.agents.unhold(agent_id, self._hold_item)
        except Exception as exc:  # they set themselves available from the desk
            log.warning("could not release supervisor agent %s: %s", agent_id, exc)

    async def _supervisor_left(self) -> None:
        leg, self.supervisor = self.supervisor, None
        if self.conference is not None and leg is not None:
            self.conference.remove(leg.call_id)
        self._apply_routes()
        await self._forget_request()
        await self._publish({"type": "call.supervision", "call_id": self.call_id, "agent": self.live.get("agent"),
                            "supervisor": self.supervisor_id, "mode": None, "state": "left"})

    async def _stop_supervision(self) -> None:
        if self.dialing is not None and not self.dialing.done():
            self.dialing.cancel()  # the endpoint CANCELs the INVITE
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.dialing
        self.dialing = None
        leg, self.supervisor = self.supervisor, None
        if leg is not None:
            if self.conference is not None:
                self.conference.remove(leg.call_id)
            with contextlib.suppress(Exception):
                await leg.hangup()
            await self._publish({"type": "call.supervision", "call_id": self.call_id, "agent": self.live.get("agent"),
                                "supervisor": self.supervisor_id, "mode": None, "state": "left"})
        self.mode = None
        self._apply_routes()
        await self._unhold()

    # ---- recording ------------------------------------------------------------------------------------------

    async def start_recording(self, data_dir: Path, meta: dict[str, Any]) -> str | None:
        if self.conference is None or self.caller is None:
            return None
        rec = Recorder(data_dir / "voicemail", RECORDING_PREFIX + uuid.uuid4().hex[:20])
        try:
            await rec.open()
        except OSError as exc:
            log.error("cannot record call %s: %s", self.call_id, exc)
            return None
        self.recorder = rec
        self._tap = self.conference.tap(recorded(self.caller.call_id, self.agent.call_id, None, None), rec.sink)
        self._apply_routes()
        self.recording_meta = {"id": rec.recording_id, "call_id": self.call_id, "trace_id": self.trace_id,
                               "started_at": self.clock.now().isoformat(), "state": "recording", **meta}
        r, k = self.store.redis, self.store.keys
        with contextlib.suppress(*STORE_AWAY):
            async with r.pipeline(transaction=False) as pipe:
                pipe.set(k.call_recording(rec.recording_id), _json(self.recording_meta))
                pipe.zadd(k.call_recordings, {rec.recording_id: self.clock.now().timestamp()})
                pipe.rpush(k.call_recordings_of(self.call_id), rec.recording_id)
                await pipe.execute()
        return rec.recording_id

    async def recording_state(self, want: str | None) -> None:
        try:
            await self._recording_state(want)
        except OSError as exc:
            # A full disk or a lost mount stops the recording, never the call it records.
            await self._recording_failed(exc)

    async def _recording_failed(self, exc: OSError) -> None:
        rec, self.recorder = self.recorder, None
        if self.conference is not None and self._tap is not None:
            self.conference.untap(self._tap)
        self._tap = None
        log.error("recording of call %s stopped: %s", self.call_id, exc)
        if rec is not None:
            meta = {**(self.recording_meta or {}), "state": "failed", "error": str(exc)[:200],
                    "ended_at": self.clock.now().isoformat(), "duration_s": round(rec.duration_s, 2)}
            with contextlib.suppress(*STORE_AWAY):
                await self.store.redis.set(self.store.keys.call_recording(rec.recording_id), _json(meta))
            await self._publish({"type": "call.recording", "call_id": self.call_id, "agent": self.live.get("agent"),
                                 "recording": rec.recording_id, "failed": True})
        await self.save_live()

    async def _recording_state(self, want: str | None) -> None:
        rec = self.recorder
        if rec is None:
            return
        now = self.clock.now().isoformat()
        if want == "paused" and not rec.paused:
            rec.pause(now)
        elif want != "paused" and rec.paused:
            rec.resume(now)
        else:
            await rec.flush()
            return
        await rec.flush()
        await self._publish({"type": "call.recording", "call_id": self.call_id, "agent": self.live.get("agent"),
                            "recording": rec.recording_id, "paused": rec.paused})
        await self.save_live()

    async def finish_recording(self, sink: RecordingSink | None) -> None:
        rec, self.recorder = self.recorder, None
        if rec is None:
            return
        if self.conference is not None and self._tap is not None:
            self.conference.untap(self._tap)
        self._tap = None
        rec.resume(self.clock.now().isoformat())
        try:
            path, digest = await rec.finish()
        except OSError as exc:
            log.error("recording %s of call %s not finished: %s", rec.recording_id, self.call_id, exc)
            return
        meta = {**(self.recording_meta or {}), "ended_at": self.clock.now().isoformat(), "state": "done",
                "duration_s": round(rec.duration_s, 2), "sha256": digest,
                "pauses": [p.__dict__ for p in rec.pauses]}
        if sink is not None:
            try:
                await sink.put(rec.recording_id, path)
            except Exception as exc:  # the file stays on this node's disk; LocalRecordings still serves it here
                log.warning("recording %s not copied to the shared store: %s", rec.recording_id, exc)
                meta["shared"] = False
        with contextlib.suppress(*STORE_AWAY):
            await self.store.redis.set(self.store.keys.call_recording(rec.recording_id), _json(meta))

    async def close(self, sink: RecordingSink | None) -> None:
        try:
            await self._stop_supervision()
        finally:
            try:
                await self.finish_recording(sink)
            finally:
                await self.drop_live()


def _json(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)


def as_dict(raw: str | bytes) -> dict[str, Any]:
    import json

    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
