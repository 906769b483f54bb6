"""Runs one contact through the flows: the recognition policy, branches, answers, hand-overs.

The engine is channel-blind: it talks to a `ContactIO` (a call or a chat) and records every
step with its timing in the `Session`, which becomes the call record. A contact runs to the
end on the flow version it started with, whatever admins change meanwhile.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError

from config.flows import (
    Answer,
    Branch,
    Enqueue,
    Flows,
    Gather,
    Goto,
    Hangup,
    Policy,
    Record,
    Route,
    Say,
    Step,
    Transfer,
    Voicemail,
)
from config.knowledge import FileStatus
from config.models import Settings
from core.clock import Clock
from core.errors import Unavailable
from core.store import REDIS_ERRORS
from ivr import speak
from ivr.contact import Ask, CallerGone, Choice, ContactIO, Heard, PathEntry, Session, Transcript
from ivr.hooks import Hooks
from routing.calendar import Calendar
from routing.router import Router
from speech.stt import ClosedSet

log = logging.getLogger(__name__)

ZERO_WORDS = {"cero", "0"}
PERSON_INTENT = "hablar_agente"
OUT_OF_SCOPE = {None, "", "none"}


class Jump(Exception):
    def __init__(self, flow: str) -> None:
        super().__init__(flow)
        self.flow = flow


class _End(Exception):
    pass


class SelfService(Protocol):
    async def answer(self, topic: str) -> bool:
        """True when the caller got an answer, False when a person should take over."""
        ...


class FileAdapter(Protocol):
    """The processing platform that knows the status of administrative files (expedientes)."""

    async def status(self, reference: str) -> FileStatus | None: ...


@dataclass
class Deps:
    """What a contact needs from the rest of Atiende; built per contact from the current versions."""

    settings: Settings
    router: Router
    calendar: Calendar
    hooks: Hooks
    clock: Clock
    files: FileAdapter | None = None
    on_update: Callable[[Session], Awaitable[None]] | None = None  # e.g. save the record while the call runs
    extra: dict[str, Any] = field(default_factory=dict)


# What a caller hears when the shared store fails under a step: once with a voicemail offer, then a goodbye.
DEGRADED_FLOW = "closed_offer"
STORE_DOWN = "Disculpe, por una incidencia técnica ahora no podemos completar su consulta."
STORE_DOWN_END = "Disculpe, por una incidencia técnica no podemos atenderle ahora. Por favor, llame más tarde."
# Any error the store answers with, not only a lost connection: a primary refusing writes (NOREPLICAS once its
# replicas are gone, OOM, MISCONF when its disk fails) must give the caller the apology and the voicemail offer,
# not a hang-up; the log keeps the error.
STORE_ERRORS = (*REDIS_ERRORS, RedisError, Unavailable)


class _Fmt(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


class Engine:
    def __init__(self, doc: Flows, deps: Deps, version: int = 0, *,
                 answers: Callable[[Engine], SelfService]) -> None:
        """`answers` builds the self-service answers over this engine (ivr.answers.Answers), so they speak
        through it and phone and chat say the same thing."""
        self.doc = doc
        self.deps = deps
        self.version = version
        self.answers = answers(self)

    # ---- contact lifecycle ----------------------------------------------------------------------

    def new_session(self, io: ContactIO, *, call_id: str | None = None, trace_id: str | None = None) -> Session:
        return Session(call_id=call_id or _new_id(), trace_id=trace_id or _new_id(), channel=io.channel,
                       caller=io.caller, started_at=self.deps.clock.now(), flows_version=self.version)

    async def run(self, io: ContactIO, session: Session | None = None) -> Session:
        s = session or self.new_session(io)
        self.io = io
        self.session = s
        self._refresh_calendar()
        flow, index, count = self.doc.entry_flow, 0, 0
        try:
            await self._flows(s, flow, index, count)
            await self._survey()
        except CallerGone:
            s.ended_by = s.ended_by or "caller"
        finally:
            s.ended_at = self.deps.clock.now()
            if s.outcome is None:
                s.outcome = "self_service" if s.answered else "abandoned"
            if not s.ended_by:
                s.ended_by = "ivr"
            if not io.ended:
                try:
                    await io.hangup()
                except CallerGone:
                    pass
        return s

    async def _flows(self, s: Session, flow: str, index: int, count: int) -> None:
        """Run steps from `flow`[`index`] until the contact ends (a terminal step, the end of a flow, _End)."""
        try:
            while True:
                steps = self.doc.flows.get(flow, [])
                if index >= len(steps):
                    break
                count += 1
                if count > self.doc.max_steps:
                    log.error("contact %s stopped after %d steps (flow loop?)", s.call_id, count - 1)
                    s.ended_by = "max_steps"
                    break
                step = steps[index]
                entry = PathEntry(flow=flow, index=index, verb=step.verb, id=step.id, at=self.deps.clock.now())
                t0 = self.deps.clock.monotonic()
                s.path.append(entry)
                try:
                    await self._step(step, entry)
                    index += 1
                except Jump as j:
                    entry.detail["goto"] = j.flow
                    flow, index = j.flow, 0
                except STORE_ERRORS as exc:
                    entry.detail["store"] = "unavailable"
                    flow, index = await self._store_down(exc)
                finally:
                    entry.ms = int((self.deps.clock.monotonic() - t0) * 1000)
                await self._notify()
        except _End:
            pass

    async def _survey(self) -> None:
        """The post-contact survey, when the admin turned it on and this contact is one it follows."""
        s, cfg = self.session, self.doc.survey
        kind = "agent" if s.outcome == "transferred" and s.vars.get("agent") else (
            "self_service" if s.answered and s.outcome in (None, "self_service") else None)
        if not cfg.enabled or kind not in cfg.after or self.io.ended:
            return
        ask = Ask(text=cfg.question, options=[(str(n), str(n)) for n in range(1, 6)], num_digits=1,
                  grammar=["uno", "dos", "tres", "cuatro", "cinco"], timeout_s=6)
        heard = await self.listen(ask)
        self.note_transcript("survey", heard.kind, heard.text, heard.confidence, heard.digits, heard.engine)
        key = heard.digits[:1] if heard.kind == "dtmf" else _spoken_key(heard.text)
        if key in ("1", "2", "3", "4", "5"):
            s.survey = int(key)
            await self.say(cfg.thanks)

    async def _notify(self) -> None:
        if self.deps.on_update is not None:
            await self.deps.on_update(self.session)

    async def _store_down(self, exc: BaseException) -> tuple[str, int]:
        """The shared store failed under a step (tickets, queue, status lookups need it). The caller must never
        get silence: say so once, then offer a voicemail, which waits on disk until the store is back; if even
        that fails, end politely. Self-service answers keep working meanwhile."""
        s = self.session
        log.warning("store unavailable during contact %s: %s", s.call_id, exc)
        already = bool(s.vars.get("degraded"))
        s.vars["degraded"] = True
        if already or DEGRADED_FLOW not in self.doc.flows:
            await self.say(self.prompt("store_down_end") if "store_down_end" in self.doc.prompts else STORE_DOWN_END)
            raise _End
        await self.say(self.prompt("store_down") if "store_down" in self.doc.prompts else STORE_DOWN)
        return DEGRADED_FLOW, 0

    # ---- text --------------------------------------------------------------------------------

    def _refresh_calendar(self) -> None:
        cal, now = self.deps.calendar, self.deps.clock.now()
        st = cal.status(now)
        self.session.calendar_state = "open" if st.open else ("holiday" if st.holiday else "closed")
        local = now.astimezone(cal.tz)
        svc = self.deps.settings.service
        nxt = st.next_open if st.next_open is not None else (None if st.open else cal.next_open(now))
        self._vars = {
            "name": svc.name, "institution": svc.institution, "line_name": svc.line_name,
            "line_number": svc.line_number, "hours": cal.describe_hours(), "today": cal.describe_day(local.date()),
            "next_open": speak.when_phrase(nxt.astimezone(cal.tz), now) if nxt else "",
            "closed_reason": f" por ser festivo, {st.holiday}" if st.holiday else "",
        }

    def render(self, text: str, **extra: Any) -> str:
        values = _Fmt(self._vars)
        values.update({k: v for k, v in self.session.vars.items() if isinstance(v, str | int | float)})
        values.update(extra)
        return text.format_map(values)

    def prompt(self, name: str, **extra: Any) -> str:
        return self.render(self.doc.prompts.get(name, name), **extra)

    def label(self, intent: str | None) -> str:
        return self.doc.labels.get(intent or "", intent or "")

    async def say(self, text: str, *, cached: bool = False, barge_in: bool = True,
                  barge_in_ms: int | None = None) -> None:
        self.session.said.append(text)
        await self.io.say(text, cached=cached, barge_in=barge_in, barge_in_ms=barge_in_ms)

    async def listen(self, ask: Ask) -> Heard:
        self.session.said.append(ask.text)
        await self._notify()  # the live record shows the question being asked
        return await self.io.gather(ask)

    # ---- steps -------------------------------------------------------------------------------

    async def _step(self, step: Step, entry: PathEntry) -> None:
        s = self.session
        if isinstance(step, Say):
            raw = step.text if step.text is not None else self.doc.prompts[step.prompt or ""]
            text = self.render(raw)
            await self.say(text, cached=step.prompt is not None and text == raw, barge_in=step.barge_in,
                           barge_in_ms=step.barge_in_ms)
        elif isinstance(step, Gather):
            value = await self.gather(step)
            entry.detail.update({"expect": step.expect, "value": _plain(value)})
            if step.expect == "intent":
                entry.detail.update({"intent": s.intent, "confidence": round(s.confidence, 3)})
        elif isinstance(step, Route):
            target = self.doc.route_target(step, s.intent)
            entry.detail["intent"] = s.intent
            raise Jump(target)
        elif isinstance(step, Branch):
            value = self._branch_value(step.switch)
            entry.detail["value"] = value
            dest = step.cases.get(value, step.default)
            if dest is not None:
                raise Jump(dest)
        elif isinstance(step, Answer):
            ok = await self.answers.answer(step.topic)
            entry.detail["answered"] = ok
            if ok:
                if step.topic not in s.answered:
                    s.answered.append(step.topic)
            else:
                raise Jump(step.on_fail or self.doc.person_flow)
        elif isinstance(step, Enqueue):
            await self._enqueue(step, entry)
        elif isinstance(step, Record):
            raw = step.text if step.text is not None else self.doc.prompts[step.prompt or ""]
            s.said.append(self.render(raw))
            got = await self.io.record(self.render(raw), max_s=step.max_s, end_silence_s=step.end_silence_s)
            self.note_transcript(step.id or "record", "recording", got.text, got.confidence)
            s.vars[step.into] = got.text
            entry.detail["chars"] = len(got.text)
        elif isinstance(step, Voicemail):
            ref = await self.deps.hooks.voicemail.leave(s, self.io, step.queue)
            s.outcome = "voicemail"
            when = self._vars["next_open"] or "el siguiente día hábil"
            if ref:
                s.ticket_ref = ref
                entry.detail["ticket"] = ref
                said = speak.chars_spoken(ref) if s.channel == "voice" else ref
                await self.say(f"Su mensaje ha quedado registrado con la referencia {said}. Le llamaremos {when}. Gracias.")
            elif s.vars.get("voicemail_pending"):
                # Kept on disk; it becomes a ticket (and a callback) as soon as the store is back.
                entry.detail["pending"] = True
                await self.say(f"Su mensaje ha quedado grabado. Le llamaremos {when}. Gracias.")
            raise _End
        elif isinstance(step, Transfer):
            ok = await self.io.transfer(step.to)
            entry.detail["ok"] = ok
            if ok:
                s.outcome = "transferred"
                raise _End
        elif isinstance(step, Hangup):
            s.ended_by = "ivr"
            raise _End
        elif isinstance(step, Goto):
            raise Jump(step.flow)

    def _branch_value(self, switch: str) -> str:
        s = self.session
        if switch == "calendar":
            self._refresh_calendar()
            return s.calendar_state
        if switch == "intent":
            return s.intent or "none"
        if switch == "confidence":
            return "high" if s.confidence >= self.doc.policy.confirm_below else "low"
        if switch == "channel":
            return s.channel
        value = s.vars.get(switch)
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "" if value is None else str(value)

    async def _enqueue(self, step: Enqueue, entry: PathEntry) -> None:
        s = self.session
        hooks = self.deps.hooks.queue
        place = await hooks.enqueue(s, step.queue)
        s.outcome, s.queue = "queued", step.queue
        entry.detail.update({"queue": step.queue, "position": place.position})
        try:
            if step.announce:
                if s.channel == "voice":
                    await self.say(speak.waiting_text(place.position, place.wait_s, place.wait_certain)
                                   + " Por favor, no cuelgue.")
                else:
                    await self.say("Le paso con una persona del servicio; le responderá en esta misma conversación.")
            result = await hooks.wait(s, self.io, place, step.overflow_after_s)
        finally:
            # A caller who hangs up during the announcement never reaches wait(), whose own cleanup they would
            # skip: left at the head, they would block everyone behind them.
            await hooks.leave(place)
        entry.detail["wait"] = result
        if result == "hangup":
            s.ended_by = "caller"
            raise _End
        if result == "overflow" and step.overflow:
            raise Jump(step.overflow)
        if result == "connected":
            s.outcome = "transferred"
        raise _End

    # ---- recognition policy ----------------------------------------------------------------------

    def note_transcript(self, step: str, kind: Any, text: str = "", confidence: float = 0.0, digits: str = "",
                        engine: str = "", chosen: Choice | None = None) -> None:
        """One turn in the call record; `chosen`: the answer was picked from the expected ones by the audio (shown
        on the learning page beside what was transcribed)."""
        self.session.transcripts.append(Transcript(at=self.deps.clock.now(), step=step, kind=kind, text=text,
                                                   digits=digits, confidence=round(confidence, 3), engine=engine,
                                                   chosen=chosen))

    def menu_options(self, menu: str | None) -> list[tuple[str, str]]:
        if not menu:
            return []
        return [(o.key, self.label(o.intent)) for o in self.doc.menus.get(menu, [])]

    def _is_zero(self, heard: Heard, expect: str) -> bool:
        if heard.kind == "dtmf":
            return heard.digits == "0" and expect not in ("digits", "reference")
        words = speak.fold(heard.text).split()
        if expect in ("digits", "reference"):
            return words == ["cero"]
        if len(words) == 1 and expect == "intent":
            # The main question says "diga cero": one word that sounds like it ("sero", "servo") is taken as it.
            from rapidfuzz import fuzz

            from routing.normalize import phonetic

            return fuzz.ratio(phonetic(words[0]), phonetic("cero")) >= 80
        return bool(words) and (words == ["cero"] or (words[-1:] == ["cero"] and len(words) <= 3))

    async def gather(self, step: Gather) -> Any:
        raw = step.text if step.text is not None else self.doc.prompts[step.prompt or ""]
        text = self.render(raw)
        options = self.menu_options(step.menu) or ([("1", "Sí"), ("2", "No")] if step.expect == "yes_no" else [])
        ask = Ask(text=text, input=list(step.input), options=options, num_digits=step.num_digits,
                  finish_key=step.finish_key, timeout_s=step.timeout_s, max_s=step.max_s, barge_in=step.barge_in,
                  barge_in_ms=step.barge_in_ms,
                  cached=text == raw)
        value = await self.collect(ask, step.expect, self.doc.policy_of(step), menu=step.menu, name=step.id or step.expect)
        if step.expect != "intent":
            self.session.vars[step.into or step.expect] = _plain(value)
        return value

    async def ask(self, text: str, expect: str, *, retries: int = 1, name: str | None = None) -> Any:
        """A question inside an answer (the town, a reference...): None when it could not be understood."""
        pol = Policy(no_input_retries=retries, no_match_retries=retries, dtmf_fallback=False, handover=None)
        return await self.collect(Ask(text=text, input=["speech", "dtmf"]), expect, pol, name=name or expect)

    async def confirm(self, question: str) -> bool | None:
        pol = Policy(no_input_retries=1, no_match_retries=1, dtmf_fallback=False, handover=None)
        ask = Ask(text=question, options=[("1", "Sí"), ("2", "No")], num_digits=1)
        got = await self.collect(ask, "yes_no", pol, name="confirm")
        return None if got is None else got == "yes"

    async def _confirm_intent(self, question: str) -> tuple[bool | None, Heard | None]:
        """(yes/no, None) or (None, what the caller said instead: "¿Quiere X?" "quiero Y" is a new answer)."""

        # One key answers: without num_digits the keypad waited the inter-digit time (3 s) for a second one.
        ask = Ask(text=question, options=[("1", "Sí"), ("2", "No")], hints=["sí", "no"], num_digits=1,
                  closed=YES_NO, accept=lambda text: yes_or_no(text) is not None or self._is_new_answer(text))
        for attempt in range(3):
            heard = await self.listen(ask)
            self.note_transcript("confirm", heard.kind, heard.text, heard.confidence, heard.digits, heard.engine,
                                 chosen=heard.chosen)
            if heard.kind == "dtmf":
                yn = {"1": True, "2": False}.get(heard.digits[:1])
                if yn is not None:
                    return yn, None
            elif heard.kind == "speech":
                yn = yes_or_no(heard.text)
                if yn is not None:
                    return yn, None
                if self._is_new_answer(heard.text):
                    return None, heard
            # Silence, a key that is neither, or a short word the recogniser garbled ("C,", "Jun,": a "sí" over a
            # phone line): ask for the keypad rather than another open question.
            if attempt == 0:
                ask.text = self.prompt("confirm_keypad") if "confirm_keypad" in self.doc.prompts else CONFIRM_KEYPAD
                ask.text = f"{ask.text} {question}" if heard.kind == "no_input" else ask.text
            else:
                ask.text = self.prompt("no_match") + " " + CONFIRM_KEYPAD
            ask.cached = False
        return None, None

    def _is_new_answer(self, text: str) -> bool:
        """"¿Quiere X?" — "no, quiero Y": words that route to an intent are a new answer, not a garbled yes/no."""
        if len(text.split()) < 2:
            return False
        return self.deps.router.route(text, channel="voice").intent not in (None, *OUT_OF_SCOPE)

    async def collect(self, ask: Ask, expect: str, pol: Policy, *, menu: str | None = None, name: str = "gather") -> Any:
        """Ask until understood, following the policy: retries, confirmation, keypad menu, hand-over."""
        s = self.session
        base = ask.text
        no_input = no_match = 0
        pending: Heard | None = None
        denied: list[Any] = []  # guesses the caller said no to (values may be unhashable: offices, units)
        self._vocabulary(ask, expect)
        while True:
            if pending is not None:
                heard, pending = pending, None
            else:
                heard = await self.listen(ask)
                self.note_transcript(name, heard.kind, heard.text, heard.confidence, heard.digits, heard.engine,
                                     chosen=heard.chosen)
            if heard.kind == "no_input":
                no_input += 1
                if no_input > pol.no_input_retries:
                    return await self._give_up(pol, menu, "no_input")
                ask.text, ask.cached = self.prompt(pol.no_input_prompt) + " " + base, False
                continue
            if self._is_zero(heard, expect):
                self._refresh_calendar()
                if s.calendar_state == "open":  # "cero" always reaches a person while the line is open
                    s.intent, s.confidence = PERSON_INTENT, 1.0
                    raise Jump(self.doc.person_flow)
            value, sure = self.interpret(heard, expect, menu, pol)
            if value is not None and value in denied and heard.kind == "speech":
                # The caller said no to this guess and their new words make the same one: asking again would go
                # round in circles (measured: 3 of 3 such calls); the keypad menu settles it.
                if pol.dtmf_fallback and menu and self.doc.menus.get(menu):
                    return await self._give_up(pol, menu, "no_match")
                value = None
            if value is not None and not sure:
                yes, instead = await self._confirm_intent(self.prompt("confirm", label=self.label(value)))
                if yes:
                    sure = True
                else:
                    if yes is False:
                        denied.append(value)
                    value = None
                    if yes is False and "next_question" in self.doc.prompts:
                        base = self.prompt("next_question")
                    if instead is not None:
                        pending = instead  # a new answer instead of yes or no: interpret it as such
                        continue
            if value is not None:
                if expect == "intent":
                    s.intent = value
                return value
            no_match += 1
            if no_match > pol.no_match_retries:
                return await self._give_up(pol, menu, "no_match")
            ask.text, ask.cached = self.prompt(pol.no_match_prompt) + " " + base, False

    def _vocabulary(self, ask: Ask, expect: str) -> None:
        """Words the recogniser should expect; a closed set (yes/no, towns) also as a grammar to snap to."""
        kb = self.deps.settings.knowledge
        if ask.hints:
            return
        if expect == "intent" and self.deps.router is not None:
            router = self.deps.router
            try:
                ask.hints = ["cero", *router.hints()]  # first: hints past the budget are cut
            except Exception:  # hints are an optimisation, never a reason to fail a call
                ask.hints = ["cero"]
            ask.accept = lambda text: router.route(text, channel="voice").intent is not None
        elif expect == "yes_no":
            # The open transcript, and when it is no yes or no the closed set scored on the audio: snapping the
            # transcript to a sí/no grammar made "hola" a "no" and "cinco" a "sí" (espeak voices, 8 kHz µ-law).
            ask.hints, ask.closed = ["sí", "no"], ask.closed or YES_NO
            ask.accept = ask.accept or (lambda text: yes_or_no(text) is not None)
        elif expect == "town":
            towns = sorted({o.town for o in kb.offices})
            ask.hints, ask.grammar = towns, ask.grammar or towns
        elif expect == "unit":
            ask.hints = [w for u in kb.directory for w in (u.name, *u.aliases)]

    async def _give_up(self, pol: Policy, menu: str | None, why: str) -> Any:
        s = self.session
        if pol.dtmf_fallback and menu and self.doc.menus.get(menu):
            options = self.menu_options(menu)
            lines = [self.prompt("menu_option", label=label, key=key) for key, label in options]
            text = " ".join([self.prompt("menu_intro"), *lines])
            ask = Ask(text=text, input=["dtmf"], options=options, num_digits=1, cached=False)
            for _ in range(pol.dtmf_retries + 1):
                heard = await self.listen(ask)
                self.note_transcript("dtmf_menu", heard.kind, heard.text, heard.confidence, heard.digits, heard.engine)
                key = heard.digits[:1] if heard.kind == "dtmf" else _spoken_key(heard.text)
                intent = next((o.intent for o in self.doc.menus[menu] if o.key == key), None)
                if intent is not None:
                    s.intent, s.confidence = intent, 1.0
                    s.vars["via"] = "dtmf_menu"
                    if intent == PERSON_INTENT:
                        raise Jump(self.doc.person_flow)
                    return intent
                ask.text = self.prompt(pol.no_match_prompt) + " " + text
        s.vars["gave_up"] = why
        if pol.handover:
            raise Jump(pol.handover)
        return None

    def interpret(self, heard: Heard, expect: str, menu: str | None, pol: Policy) -> tuple[Any, bool]:
        """(value, sure): value None when the input does not answer the question."""
        from routing import entities

        text = heard.text.strip()
        if heard.kind == "dtmf":
            digits = heard.digits.rstrip("#")
            if expect == "intent":
                intent = next((o.intent for o in self.doc.menus.get(menu or "", []) if o.key == digits[:1]), None)
                if intent:
                    self.session.confidence = 1.0
                return intent, True
            if expect == "yes_no":
                return {"1": "yes", "2": "no"}.get(digits[:1]), True
            if expect in ("reference", "digits", "text"):
                return (digits or None), True
            return None, True
        if not text:
            return None, True
        if expect == "intent":
            res = self.deps.router.route(text, channel="voice" if self.session.channel == "voice" else "chat")
            intent = res.intent if res.intent not in OUT_OF_SCOPE else None
            self.session.vars["utterance"] = text
            self.session.confidence = float(res.confidence)
            self.session.entities = dict(res.entities or {})
            if intent is None:
                return None, True
            doubtful = bool(res.needs_confirmation) or res.confidence < pol.confirm_below or (
                heard.kind == "speech" and 0 < heard.confidence < pol.stt_confirm_below)
            return intent, not doubtful
        if expect == "yes_no":
            yn = yes_or_no(text)
            return (None if yn is None else ("yes" if yn else "no")), True
        if expect == "reference":
            return entities.extract_reference(text), True
        if expect == "digits":
            ref = entities.extract_reference(text)
            return (ref if ref and ref.isdigit() else None), True
        if expect == "town":
            return entities.extract_town(text, self.deps.settings.knowledge.offices), True
        if expect == "unit":
            return entities.extract_unit(text, self.deps.settings.knowledge.directory), True
        if expect == "vehicle":
            from ivr.vehicles import match_vehicle

            return match_vehicle(text, self.deps.settings.knowledge), True
        return text, True


CONFIRM_KEYPAD = "Perdone. Si es así, pulse 1. Si no, pulse 2."

# What a telephone recogniser makes of a lone "sí" or "no" (G.711, a short word with no context): heard
# in the audio test set and over real SIP calls. Only whole short answers count; anything longer is routed.
_YES_SOUNDS = {"si", "sii", "sip", "see", "c", "ce", "se", "xi", "chi", "shi", "sin", "1", "uno", "vale", "yes",
               "claro", "correcto", "afirmativo", "exacto", "eso"}
_NO_SOUNDS = {"no", "nou", "know", "now", "non", "nop", "nope", "2", "dos", "negativo"}


# Ways of saying yes and no, scored on the audio when the transcript is neither (`speech.stt.ClosedSet`), and
# what callers say that is neither, so that a hesitation or a cough is not forced into one. Measured with four
# espeak voices over G.711 (bench/README.md, "Closed answers"): a lone "sí" chosen 4/4 with a lead of 3.4-4.4, and
# "hola", "eh", "cinco", "tres" or a cough never chosen (leads under 2.5).
YES_NO = ClosedSet(
    choices={"sí": ("Sí.", "Sí", "Si.", "Sí, sí.", "Vale.", "Claro.", "Eso es.", "Correcto.", "Sí, eso es.",
                    "Sí, por favor."),
             "no": ("No.", "No", "No, no.", "No es eso.", "No, gracias.")},
    # Unsure answers too: without them "no lo sé" was chosen as "no" and "sí, no sé" as "sí" (lead 3.8-5.1).
    fillers=("Hola.", "Eh.", "¿Qué?", "Bueno.", "Perdón.", "¿Cómo?", "A ver.", "Pues.", "No sé.", "No lo sé.",
             "Sí, no sé.", "No estoy seguro.", "No me acuerdo.", "Ni idea.", "Depende."))


def yes_or_no(text: str) -> bool | None:
    """Yes, no or neither, from a transcript (or the closed set's choice)."""
    from routing import entities

    yn = entities.parse_yes_no(text)
    return sounds_like_yes_no(text) if yn is None else yn


def sounds_like_yes_no(text: str) -> bool | None:
    """A short transcript that can only have been "sí" or "no"; None for anything else."""
    words = speak.fold(text).replace(",", " ").replace(".", " ").split()
    if not words or len(words) > 2:
        return None
    yes = all(w in _YES_SOUNDS for w in words)
    no = all(w in _NO_SOUNDS for w in words)
    return True if yes and not no else (False if no and not yes else None)


_SPOKEN_KEYS = {w: str(i) for i, w in enumerate(speak.DIGITS)} | {"un": "1", "una": "1"}


def _spoken_key(text: str) -> str:
    for word in speak.fold(text).split():
        if word in _SPOKEN_KEYS:
            return _SPOKEN_KEYS[word]
        if re.fullmatch(r"[0-9]", word):
            return word
    return ""


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    for attr in ("office_id", "dir3_code", "name"):
        if hasattr(value, attr):
            return str(getattr(value, attr))
    return str(value)
