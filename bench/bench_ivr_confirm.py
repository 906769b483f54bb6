"""Callers who answer the IVR's confirmations as a person would, over real SIP: the end-to-end figure with them.

    .venv/bin/python bench/bench_ivr_confirm.py --callers 10 --intervals 2          # 10 callers arriving 2 s apart
    .venv/bin/python bench/bench_ivr_confirm.py --callers 10 --one-at-a-time        # the baseline: one call at a time
    .venv/bin/python bench/bench_ivr_confirm.py --callers 45 --intervals 2 --max-minutes 15   # the whole blind set

Needs root (a network namespace) and baresip, espeak-ng, sox, dumpcap, ip. What one run does, in a private network
namespace that only has `lo` (tests/sip_harness.py), with the pieces of bench/bench_ivr_load.py:

1. `atiende run` (private Redis, HTTP, the SIP line, speech) with `--clock` at a Monday 10:00 (the line is open),
   at autogroup nice `--nice` (-10 by default: deploy/systemd/atiende.service's `Nice=-10`).
2. One baresip per caller. Each caller has a held-out request (tests/data/routing_blind.tsv, lines spread over the
   intents by `atiende.testset.subset`) spoken the way the audio test set speaks it (`atiende.testset.phone_audio`:
   espeak-ng Klatt voices in turn, 8 kHz, G.711 round trip), and its "sí" and "no" in the same voice.
3. The caller is interactive: it says nothing until the IVR asks something, and answers what is asked, as a person
   would. It learns *what* is asked from the call's live record (`GET /api/v1/calls/{id}`: the IVR saves it before
   each question, with the question's text last in `said`; ivr/records.py) and from the node's log ("speech over
   capacity on call X: keypad offered"), and *when* the question has finished playing from what the caller hears
   (baresip's `sndfile` recording of the call, read as it grows: the first `--answer-pause` s of silence after the
   prompt's audio). Then:
   - the main question ("Dígame ..."): it says its request; an open question asked again (after "no", a miss or
     silence): it says the request again, once per call (`--repeats`);
   - "¿Quiere X? Diga sí o no": "sí" (`--yes`) when X is its intent's label, otherwise "no" (`--no`): a person says
     no to a wrong guess;
   - the keypad fallback of a confirmation ("Si es así, pulse 1. Si no, pulse 2."): 1 or 2 by the same rule;
   - the keypad menu ("Para X, pulse N") or the over-capacity keypad offer: the key for its intent, if there is one;
   - once the record shows the `route` step (the intent is final), it stays `--linger` s to hear the answer start,
     then hangs up. Speaking is done by switching baresip's audio source (`/ausrc aufile,<utterance>.wav`), keys
     are RFC 4733 DTMF.
4. Afterwards, from the call records (`GET /api/v1/calls`): right intent in one turn (no confirmation, no repeat,
   no key), right after at most one confirmation, right in the end; how each confirmation answer was taken (as said,
   the other way round, keypad fallback), with what the recogniser heard (the records' `confirm` transcripts). From
   a dumpcap capture on `lo` (kernel timestamps): for every caller utterance, end of speech -> first audio Atiende
   sent after it (after a silent packet, so a prompt still playing is not taken for the answer), and the same after
   each key. The machine: load average before, during (max) and after, the CPU of the service, its Redis, the
   callers and the rest of the machine, and the processes that used the most CPU meanwhile ("what else ran").

Everything is bounded: each call by `--call-timeout`, the run by `--max-minutes`. Polling costs the service
`1 / --poll` record reads per second per live call (reported as `api reads`). Results: a summary on stdout, JSON in
bench/results/ivr_confirm-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SELF = Path(__file__).resolve()
REPO = SELF.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(SELF.parent))

import bench_ivr_load as load  # noqa: E402
import httpx  # noqa: E402

from atiende.testset import VARIANTS, phone_audio, read_dev_set, subset  # noqa: E402
from tests.sip_harness import (  # noqa: E402
    AtiendeService,
    Baresip,
    HarnessError,
    NetNs,
    require_programs,
    write_wav,
)

RATE = 8000
FRAME = 160  # samples per 20 ms
SILENCE_S = 150.0  # after each utterance: baresip 1.0 hangs up when its aufile source ends
LOUD_RMS = load.LOUD_RMS
BLIND = REPO / "tests" / "data" / "routing_blind.tsv"
IVR_YAML = REPO / "config" / "defaults" / "ivr.yaml"
CONFIRM_RE = re.compile(r"¿Quiere (.+?)\? Diga sí o no")
KEYPAD_CONFIRM_RE = re.compile(r"pulse 1\b.*pulse 2\b", re.S)
MENU_RE = re.compile(r"Para ([^,.]+), pulse (\d)")
HANDOVER_FLOWS = ("person", "busy", "closed")
OVERLOAD_RE = re.compile(r"speech over capacity on call (\S+): keypad offered")


# ---- what the IVR says, from its default flows ----------------------------------------------------


@dataclass
class Prompts:
    labels: dict[str, str]  # label -> intent
    menu: dict[str, str]  # intent -> key
    open_questions: list[str]  # main_question, next_question: "what do you need?"


def prompts() -> Prompts:
    doc = yaml.safe_load(IVR_YAML.read_text(encoding="utf-8"))
    labels = {label: intent for intent, label in doc["labels"].items()}
    menu = {o["intent"]: str(o["key"]) for o in doc["menus"]["main"]}
    return Prompts(labels, menu, [doc["prompts"]["main_question"], doc["prompts"]["next_question"]])


def classify(text: str, p: Prompts) -> tuple[str, str | None]:
    """(kind, intent proposed) of a question the IVR asked: confirm, keypad_confirm, menu, open, other."""
    if KEYPAD_CONFIRM_RE.search(text) and "Si es así" in text:
        m = CONFIRM_RE.search(text)
        return "keypad_confirm", p.labels.get(m.group(1)) if m else None
    m = CONFIRM_RE.search(text)
    if m and m.group(1) in p.labels:
        return "confirm", p.labels[m.group(1)]
    if MENU_RE.search(text):
        return "menu", None
    if any(q in text for q in p.open_questions):
        return "open", None
    return "other", None


# ---- one caller -------------------------------------------------------------------------------------


@dataclass
class Round:
    """One "¿Quiere X?" and what became of it."""

    proposed: str
    right: bool  # X was the caller's intent
    answers: list[str] = field(default_factory=list)  # "sí", "no", "key 1", "key 2", in order
    heard: list[str] = field(default_factory=list)  # what the recogniser made of each answer (confirm transcripts)
    outcome: str = ""  # taken / taken the other way / keypad fallback then ... / unanswered


@dataclass
class Caller:
    index: int
    text: str
    intent: str
    voice: str
    user: str
    call_id: str = ""  # the call record's id
    sip_call_id: str = ""  # baresip's (the SIP Call-ID)
    got: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)  # {t, kind, what, asked}
    rounds: list[Round] = field(default_factory=list)
    menu_offered: int = 0
    keypad_instead: int = 0  # over capacity: keypad offered instead of listening
    repeats: int = 0
    no_prompt_audio: int = 0  # answered after the fallback wait: no prompt audio heard in time
    established_at: float = 0.0
    ended_at: float = 0.0
    confirm_transcripts: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # each question's kind, in order
    errors: list[str] = field(default_factory=list)

    @property
    def right(self) -> bool:
        return self.got == self.intent

    @property
    def keys(self) -> int:
        return sum(1 for a in self.actions if a["kind"] == "key")

    @property
    def one_turn(self) -> bool:
        return self.right and not self.rounds and not self.repeats and not self.keys

    @property
    def within_one_confirmation(self) -> bool:
        """The request, then at most one "¿Quiere X?" answered (by voice, or by its keypad fallback)."""
        return self.right and len(self.rounds) <= 1 and not self.repeats and not self.menu_offered \
            and not self.keypad_instead


class Ear:
    """What the caller hears, from baresip's `sndfile` recording read as it grows: loud or not per 20 ms."""

    def __init__(self, rec_dir: Path, after: float) -> None:
        self.rec_dir, self.after = rec_dir, after
        self.path: Path | None = None
        self.offset = 0
        self.loud: list[bool] = []
        self._rest = b""

    def poll(self) -> None:
        if self.path is None:
            files = [f for f in self.rec_dir.glob("dump-*-dec.wav") if f.stat().st_mtime >= self.after - 1]
            if not files:
                return
            self.path = max(files, key=lambda f: f.stat().st_mtime)
            head = self.path.read_bytes()[:512]
            i = head.find(b"data")
            if i < 0:
                self.path = None
                return
            self.offset = i + 8
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = self._rest + fh.read()
        self.offset += len(data) - len(self._rest)
        n = len(data) // (2 * FRAME)
        if n:
            pcm = np.frombuffer(data[: n * 2 * FRAME], "<i2").astype(np.float64).reshape(n, FRAME)
            self.loud += list(np.sqrt((pcm ** 2).mean(axis=1)) >= LOUD_RMS)
        self._rest = data[n * 2 * FRAME:]

    async def prompt_end(self, since: int, pause_s: float, no_audio_s: float, limit_s: float) -> bool:
        """Wait until the audio heard from frame `since` on was loud and then quiet for `pause_s`: True; False when
        no loud frame came within `no_audio_s`, or it never went quiet within `limit_s`."""
        t0 = time.monotonic()
        need = int(pause_s / 0.02)
        while True:
            self.poll()
            tail = self.loud[max(0, since):]
            loud_at = [i for i, x in enumerate(tail) if x]
            if loud_at and len(tail) - 1 - loud_at[-1] >= need:
                return True
            waited = time.monotonic() - t0
            if (not loud_at and waited > no_audio_s) or waited > limit_s:
                return False
            await asyncio.sleep(0.05)


def utterance_wav(work: Path, name: str, pcm: bytes) -> Path:
    speech = np.frombuffer(pcm, "<i2")
    return write_wav(work / f"{name}.wav", np.concatenate([speech, np.zeros(int(SILENCE_S * RATE), "<i2")]))


class Api:
    def __init__(self, url: str) -> None:
        self.client = httpx.AsyncClient(base_url=url, timeout=10.0)
        self.reads = 0

    async def login(self) -> None:
        r = await self.client.post("/api/v1/auth/login", json={"username": load.ADMIN[0], "password": load.ADMIN[1]})
        r.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {r.json()['token']}"

    async def get(self, path: str) -> Any:
        for attempt in range(3):
            self.reads += 1
            try:
                r = await self.client.get(path)
            except httpx.TransportError:  # e.g. a kept-alive connection the server closed meanwhile: read again
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)
                continue
            r.raise_for_status()
            return r.json()
        raise AssertionError("unreachable")


class LogWatch:
    """The node's log, read as it grows: the calls offered the keypad because speech was over capacity."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.overloaded: list[str] = []

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        self.overloaded += OVERLOAD_RE.findall(data[:cut].decode(errors="replace"))

    def count(self, *ids: str) -> int:
        self.poll()
        return sum(1 for x in self.overloaded if x and any(i and (x == i or x in i or i in x) for i in ids))


async def find_record(api: Api, user: str, taken: set[str], within: float) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for rec in (await api.get("/api/v1/calls?limit=100"))["calls"]:
            if rec["call_id"] not in taken and re.search(rf"\b{re.escape(user)}\b", str(rec.get("caller", ""))):
                taken.add(rec["call_id"])
                return str(rec["call_id"])
        await asyncio.sleep(0.3)
    raise HarnessError(f"no call record for {user} within {within} s")


async def drive(c: Caller, phone: Baresip, api: Api, logs: LogWatch, p: Prompts, wavs: dict[str, Path],
                args: argparse.Namespace, taken: set[str]) -> None:
    """One call, start to hang-up, answering what the IVR asks."""
    start = len(phone.events)
    t_dial = time.time()
    await phone.dial(load.LINE)
    ev = await phone.wait_event("CALL_ESTABLISHED", "CALL_CLOSED", within=20, start=start)
    if ev.get("type") != "CALL_ESTABLISHED":
        raise HarnessError(f"call not established: {ev}")
    c.established_at = time.time()
    c.sip_call_id = str(ev.get("id", ""))
    ear = Ear(phone.rec_dir, t_dial)
    c.call_id = await find_record(api, c.user, taken, 15)
    deadline = time.monotonic() + args.call_timeout
    seen = 0  # entries of `said` already handled
    overload_seen = 0
    routed_at: float | None = None
    last_proposed: str | None = None
    asked_open = 0
    def closed() -> bool:
        return any(e.get("type") == "CALL_CLOSED" for e in phone.events[start:])

    while time.monotonic() < deadline:
        if closed():
            break
        ear.poll()
        rec = await api.get(f"/api/v1/calls/{c.call_id}")
        if rec.get("ended_at"):
            break
        # The intent is final once the `route` step ran, or the call went to a person without one (hand-over).
        if routed_at is None and any(e.get("verb") == "route" or e.get("flow") in HANDOVER_FLOWS
                                     for e in rec.get("path") or []):
            routed_at = time.monotonic()
        if routed_at is not None:
            if time.monotonic() - routed_at >= args.linger:
                break
            await asyncio.sleep(args.poll)
            continue
        said = rec.get("said") or []
        if len(said) <= seen:
            await asyncio.sleep(args.poll)
            continue
        seen = len(said)
        question = said[-1]
        kind, proposed = classify(question, p)
        frame_seen = len(ear.loud) - int(args.poll / 0.02) - 10
        if kind == "other":  # a statement, or a yes/no question that is not ours to answer
            continue
        c.steps.append(kind)
        heard_end = await ear.prompt_end(frame_seen, args.answer_pause, args.no_audio, 60.0)
        if not heard_end:
            c.no_prompt_audio += 1
        n_over = logs.count(c.call_id, c.sip_call_id)
        over = n_over > overload_seen
        overload_seen = n_over
        if over:
            c.keypad_instead += 1
        # What to do.
        action: tuple[str, str] | None = None  # ("say", wav name) or ("key", digit)
        if kind == "confirm":
            assert proposed is not None
            last_proposed = proposed
            c.rounds.append(Round(proposed=proposed, right=proposed == c.intent))
            yes = proposed == c.intent
            action = ("key", "1" if yes else "2") if over else ("say", "si" if yes else "no")
        elif kind == "keypad_confirm":
            if proposed is not None:
                last_proposed = proposed
            if last_proposed is None:
                c.errors.append(f"keypad confirmation without a proposal: {question!r}")
            else:
                if not c.rounds:
                    c.rounds.append(Round(proposed=last_proposed, right=last_proposed == c.intent))
                action = ("key", "1" if last_proposed == c.intent else "2")
        elif kind == "menu" or (kind == "open" and over):
            c.menu_offered += kind == "menu"
            key = p.menu.get(c.intent)
            if key is not None:  # intents without a key (a procedure, an appointment) wait for the hand-over
                action = ("key", key)
        elif kind == "open":
            asked_open += 1
            if asked_open == 1:
                action = ("say", "request")
            elif c.repeats < args.repeats:
                c.repeats += 1
                action = ("say", "request")
        if action is None:
            continue
        what = action[1]
        if action[0] == "say":
            reply = await phone.command("ausrc", f"aufile,{wavs[what]}")
            if not reply.get("ok"):
                c.errors.append(f"ausrc failed: {reply}")
        else:
            await phone.send_dtmf(what, gap=0.05, length=0.15)
        answer = {"si": "sí", "no": "no"}.get(what, f"key {what}" if action[0] == "key" else what)  # what it meant
        c.actions.append({"t": time.time(), "kind": action[0], "what": answer, "asked": kind, "prompt_end": heard_end,
                          "question": question[:120]})
        if kind in ("confirm", "keypad_confirm") and c.rounds:
            c.rounds[-1].answers.append(answer)
    else:
        c.errors.append(f"call still going after {args.call_timeout} s")
    with contextlib.suppress(HarnessError):
        if not closed():
            await phone.hangup()
    with contextlib.suppress(HarnessError):
        await phone.wait_event("CALL_CLOSED", within=10, start=start)
    c.ended_at = time.time()


def settle(c: Caller, rec: dict[str, Any] | None) -> None:
    """The final record: intent, and how each confirmation answer was taken."""
    if rec is None:
        c.errors.append("no final call record")
        return
    c.got = rec.get("intent")
    conf = [t for t in rec.get("transcripts") or [] if t.get("step") == "confirm"]
    c.confirm_transcripts = [t.get("text") or (f"key {t.get('digits')}" if t.get("digits") else
                                               f"({t.get('kind', '')}, no text)") for t in conf]
    # Each confirmation question (its spoken "¿Quiere X?" and any keypad prompt after it) is one listen, one
    # transcript, in order; the steps after a round say how its answers were taken.
    k = 0
    steps = c.steps
    ri = -1
    for i, kind in enumerate(steps):
        if kind == "confirm":
            ri += 1
        if kind not in ("confirm", "keypad_confirm") or ri < 0 or ri >= len(c.rounds):
            continue
        r = c.rounds[ri]
        if k < len(c.confirm_transcripts):
            r.heard.append(c.confirm_transcripts[k])
        k += 1
        nxt = steps[i + 1] if i + 1 < len(steps) else "end"
        if nxt == "keypad_confirm":
            continue
        said_yes = (r.answers[-1] if r.answers else "") in ("sí", "key 1")
        via = "keypad" if any(a.startswith("key") for a in r.answers) else "voice"
        if not r.answers:
            r.outcome = "unanswered"
            continue
        taken_yes = nxt == "end" and c.got == r.proposed
        taken_no = nxt in ("open", "menu")
        fallback = ", after the voice answer fell back to keypad" if via == "keypad" and len(r.answers) > 1 else ""
        if taken_yes or taken_no:
            r.outcome = f"{'taken' if taken_yes == said_yes else 'taken the other way'} ({via}{fallback})"
        elif nxt == "confirm":  # "¿Quiere Y?" next: the answer was heard as a new request
            r.outcome = f"heard as a new request ({via}{fallback})"
        else:
            r.outcome = f"unclear (next {nxt})"


# ---- latency from the capture -------------------------------------------------------------------------


def segments(s: load.Stream, gap_s: float = 0.6) -> list[tuple[float, float]]:
    """Loud runs of a stream (start, end), split where it is quiet for more than gap_s."""
    out: list[tuple[float, float]] = []
    for t, lo in zip(s.times, s.loud, strict=True):
        if not lo:
            continue
        if out and t - out[-1][1] <= gap_s:
            out[-1] = (out[-1][0], t + 0.02)
        else:
            out.append((t, t + 0.02))
    return [x for x in out if x[1] - x[0] >= 0.1]


# ---- one run -------------------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    callers: int
    interval_s: float
    nice: int
    yes: str = "sí"
    no: str = "no"
    results: list[Caller] = field(default_factory=list)
    speech_lat: list[float] = field(default_factory=list)
    request_lat: list[float] = field(default_factory=list)  # after the first request
    answer_lat: list[float] = field(default_factory=list)  # after "sí"/"no"
    key_lat: list[float] = field(default_factory=list)
    still_playing: int = 0
    unmeasured: int = 0
    api_reads: int = 0
    cpu_pct: float = 0.0
    redis_cpu_pct: float = 0.0
    callers_cpu_pct: float = 0.0
    others_cpu_pct: float = 0.0
    bench_cpu_pct: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_max1: float = 0.0
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    top_others: list[str] = field(default_factory=list)
    code: str = ""
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def proc_cpu() -> dict[int, tuple[float, str]]:
    """Every process's CPU seconds so far and a short name."""
    out: dict[int, tuple[float, str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        st = load._stat(int(d.name))
        if not st:
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = ""
        out[int(d.name)] = ((int(st[11]) + int(st[12])) / load.CLK_TCK, cmd[:90] or load.comm(int(d.name)))
    return out


def pct(a: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(a), q)), 2) if a else None


async def run_once(ns: NetNs, work: Path, rows: list[tuple[str, str, str]], args: argparse.Namespace,
                   tag: str) -> Run:
    one = args.one_at_a_time
    run = Run(mode="one at a time" if one else f"every {args.intervals:g} s", callers=len(rows),
              interval_s=0.0 if one else args.intervals, nice=args.nice, yes=args.yes, no=args.no)
    run_dir = work / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    ns.reset_ports()
    admin = f"[{{username: {load.ADMIN[0]}, name: Bench, roles: [admin], password: {load.ADMIN[1]}}}]"
    env = dict(kv.split("=", 1) for kv in args.env) | {
        "ATIENDE_SIP__MAX_CALLS": "100", "ATIENDE_DESK__DEMO": "true", "ATIENDE_DESK__USERS": admin}
    svc = AtiendeService(ns, run_dir / "svc", clock=load.CLOCK, env=env)
    p = prompts()
    phones: list[Baresip] = []
    callers: list[Caller] = []
    dumpcap = None
    api: Api | None = None
    t_start = time.monotonic()
    run.load_before = os.getloadavg()
    run.code = code_state()
    try:
        await svc.start(within=60)
        assert svc.proc is not None
        log_path = run_dir / "svc" / "atiende.log"
        for _ in range(600):  # speech engines load and fixed prompts render in the background after start
            if log_path.exists() and "speech-to-text engine" in log_path.read_text(errors="replace"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)
        if args.nice:
            load.set_autogroup_nice(svc.proc.pid, args.nice)
        api = Api(svc.http_url)
        await api.login()
        logs = LogWatch(log_path)
        wavs: list[dict[str, Path]] = []
        for i, (text, intent, variant) in enumerate(rows):
            voice, speed, pitch = VARIANTS[[f"{v}@{s}/{pi}" for v, s, pi in VARIANTS].index(variant)]
            d = run_dir / f"caller{i}"
            d.mkdir(exist_ok=True)
            wavs.append({name: await asyncio.to_thread(utterance_wav, d, name, phone_audio(said, voice, speed, pitch))
                         for name, said in (("request", text), ("si", args.yes), ("no", args.no))})
            quiet = write_wav(d / "quiet.wav", np.zeros(int(SILENCE_S * RATE), "<i2"))
            user = f"c{i}x"
            callers.append(Caller(index=i, text=text, intent=intent, voice=variant, user=user))
            b = Baresip(ns, d / "baresip", wav=quiet, user=user, record=True, max_calls=2, rtp_ports=8, log=False)
            phones.append(await b.start())
        dumpcap = await load.start_capture(ns, run_dir)
        redis_pids = [q for q in load.tree(svc.proc.pid) if load.comm(q).startswith("redis")]
        pids = [q for q in load.tree(svc.proc.pid) if q not in redis_pids]
        phone_pids = [b.proc.pid for b in phones if b.proc]
        bench_pids = [os.getpid(), dumpcap.pid]  # the poller and the capture
        procs0 = proc_cpu()
        b0 = load.cpu_s(bench_pids, reaped=False)
        cpu0, rcpu0, g0, m0, t0 = (load.cpu_s(pids), load.cpu_s(redis_pids), load.cpu_s(phone_pids, reaped=False),
                                   load.machine_cpu_s(), time.monotonic())
        taken: set[str] = set()
        stop_at = t_start + args.max_minutes * 60

        async def one_call(k: int) -> None:
            assert api is not None
            try:
                await drive(callers[k], phones[k], api, logs, p, wavs[k], args, taken)
            except (HarnessError, httpx.HTTPError, OSError) as exc:
                callers[k].errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")

        async def sample_load() -> None:
            while True:
                run.load_max1 = max(run.load_max1, os.getloadavg()[0])
                await asyncio.sleep(2.0)

        sampler = asyncio.create_task(sample_load())
        tasks: list[asyncio.Task[None]] = []
        for k in range(len(rows)):
            if time.monotonic() > stop_at:
                run.errors.append(f"time budget reached: {k} of {len(rows)} calls placed")
                break
            if one:
                await one_call(k)
            else:
                tasks.append(asyncio.create_task(one_call(k)))
                await asyncio.sleep(args.intervals)
        if tasks:
            await asyncio.gather(*tasks)
        sampler.cancel()
        t1 = time.monotonic()
        pids = [q for q in load.tree(svc.proc.pid) if q not in redis_pids]
        b1 = load.cpu_s(bench_pids, reaped=False)
        cpu1, rcpu1, g1, m1 = (load.cpu_s(pids), load.cpu_s(redis_pids), load.cpu_s(phone_pids, reaped=False),
                               load.machine_cpu_s())
        procs1 = proc_cpu()
        run.load_after = os.getloadavg()
        run.load_max1 = max(run.load_max1, run.load_after[0])
        dt = t1 - t0
        run.cpu_pct = round(100 * (cpu1 - cpu0) / dt, 1)
        run.redis_cpu_pct = round(100 * (rcpu1 - rcpu0) / dt, 1)
        run.callers_cpu_pct = round(100 * (g1 - g0) / dt, 1)
        run.bench_cpu_pct = round(100 * (b1 - b0) / dt, 1)
        run.others_cpu_pct = round(100 * ((m1 - m0) - (cpu1 - cpu0) - (rcpu1 - rcpu0) - (g1 - g0) - (b1 - b0)) / dt, 1)
        mine = set(pids) | set(redis_pids) | set(phone_pids) | set(bench_pids)
        used = sorted(((procs1[q][0] - procs0.get(q, (0.0, ""))[0], procs1[q][1]) for q in procs1 if q not in mine),
                      reverse=True)
        run.top_others = [f"{100 * s / dt:.0f}% {name}" for s, name in used[:5] if s / dt >= 0.02]
        await asyncio.sleep(1.0)
        records = {r["call_id"]: r for r in (await api.get("/api/v1/calls?limit=1000"))["calls"]}
        for c in callers:
            settle(c, records.get(c.call_id))
        run.api_reads = api.reads
    except (HarnessError, httpx.HTTPError, OSError) as exc:
        run.errors.append(f"{type(exc).__name__}: {str(exc)[:1500]}")
    finally:
        if api is not None:
            await api.client.aclose()
        await load.stop_all(ns, dumpcap, phones, svc)
    run.results = callers
    run.wall_s = round(time.monotonic() - t_start, 1)
    pcap = run_dir / "rtp.pcap"
    if pcap.exists():
        latencies(run, phones, load.parse_pcap(pcap))
        if not args.keep:
            pcap.unlink()
    return run


def latencies(run: Run, phones: list[Baresip], streams: list[load.Stream]) -> None:
    lo, hi = load.RTP_RANGE
    server = {s.src[1]: s for s in streams if lo <= s.src[1] <= hi and len(s.times) > 20}
    client = {s.dst[1]: s for s in streams if lo <= s.dst[1] <= hi and len(s.times) > 20}
    for port, srv in server.items():
        cl = client.get(port)
        if cl is None:
            continue
        owner = next((k for k, b in enumerate(phones) if b.rtp_base <= cl.src[1] < b.rtp_base + b.rtp_count), None)
        if owner is None:
            continue
        c = run.results[owner]
        said = [a for a in c.actions if a["kind"] == "say"]
        for j, (_, end) in enumerate(segments(cl)):
            lat, playing = load.next_audio(srv, end)
            run.still_playing += playing
            if lat is None:
                run.unmeasured += 1
                continue
            run.speech_lat.append(round(lat, 3))
            what = said[j]["what"] if j < len(said) else "?"
            (run.answer_lat if what in ("sí", "no") else run.request_lat).append(round(lat, 3))
        for a in c.actions:
            if a["kind"] == "key":
                lat, _ = load.next_audio(srv, a["t"])
                if lat is not None:
                    run.key_lat.append(round(lat, 3))


def report(r: Run) -> list[str]:
    n = len(r.results)
    rounds = [x for c in r.results for x in c.rounds]
    asked = sum(1 for c in r.results if c.rounds)
    out = [f"## {r.callers} callers, {r.mode}, service autogroup nice {r.nice}, answers {r.yes!r} / {r.no!r}, "
           f"{r.wall_s:.0f} s",
           f"right intent in one turn:                        {sum(c.one_turn for c in r.results)}/{n}",
           f"right intent after at most one confirmation:     {sum(c.within_one_confirmation for c in r.results)}/{n}",
           f"right intent in the end (any way):               {sum(c.right for c in r.results)}/{n}",
           f"calls that asked to confirm:                     {asked}/{n} ({len(rounds)} confirmation questions; "
           f"{sum(x.right for x in rounds)} proposed the right intent)"]
    outcomes: dict[str, int] = {}
    for x in rounds:
        key = f"{'sí' if x.right else 'no'} -> {x.outcome or '?'}"
        outcomes[key] = outcomes.get(key, 0) + 1
    out.append("confirmations (what the caller meant -> how it was taken): "
               + (", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())) or "none"))
    voice = [(a, h) for x in rounds for a, h in zip(x.answers, x.heard, strict=False) if not a.startswith("key")]
    out.append("voice answers as the recogniser heard them: " + (", ".join(f"{a!r}->{h!r}" for a, h in voice) or "none"))
    out.append(f"keypad menu offered: {sum(c.menu_offered for c in r.results)}, keypad instead of speech (over "
               f"capacity): {sum(c.keypad_instead for c in r.results)}, requests repeated: "
               f"{sum(c.repeats for c in r.results)}, keys pressed: {sum(c.keys for c in r.results)}, "
               f"answered without hearing the prompt end: {sum(c.no_prompt_audio for c in r.results)}")

    def lat(name: str, a: list[float]) -> str:
        if not a:
            return f"{name}: -"
        return f"{name}: p50 {pct(a, 50):.2f} / p95 {pct(a, 95):.2f} / max {max(a):.2f} s (n={len(a)})"

    out.append("end of speech -> answer audio, " + "; ".join([
        lat("every utterance", r.speech_lat), lat("after the request", r.request_lat),
        lat("after sí/no", r.answer_lat)]) + f"; still playing {r.still_playing}, unmeasured {r.unmeasured}")
    out.append(lat("key -> answer audio", r.key_lat))
    out.append(f"CPU (% of one core): service {r.cpu_pct:.0f}, redis {r.redis_cpu_pct:.0f}, callers "
               f"{r.callers_cpu_pct:.0f}, bench (poller, capture) {r.bench_cpu_pct:.0f}, rest of the machine "
               f"{r.others_cpu_pct:.0f}; api reads {r.api_reads}")
    out.append("load average before {:.2f} {:.2f} {:.2f}, max 1-min during {:.2f}, after {:.2f} {:.2f} {:.2f}".format(
        *r.load_before, r.load_max1, *r.load_after))
    out.append(f"code: {r.code}")
    out.append("what else ran (CPU % of one core over the run, processes alive at its end): "
               + ("; ".join(r.top_others) or "nothing notable"))
    for c in r.results:
        flag = "ok " if c.right else "MISS"
        rs = " | ".join(f"¿{x.proposed}? {'/'.join(x.answers) or '-'} heard {x.heard} -> {x.outcome}" for x in c.rounds)
        out.append(f"  {flag} {c.intent:>17} -> {c.got or '-':<17} {c.voice:<22} {c.text!r}"
                   + (f"  [{rs}]" if rs else "") + (f" steps {c.steps}" if c.steps else "")
                   + (f" errors {c.errors}" if c.errors else ""))
    out += [f"  error: {e[:400]}" for e in r.errors]
    return out


def code_state() -> str:
    """The commit and the uncommitted changes of the product's code the service runs (the working tree)."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False).stdout

    dirs = ["atiende", "config", "core", "ivr", "routing", "speech", "telephony", "desk", "desk_api", "voicemail"]
    dirty = git("status", "--short", "--", *dirs).split()[1::2]
    diff = git("diff", "HEAD", "--", *dirs)
    digest = hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else "-"
    return f"{git('rev-parse', '--short', 'HEAD').strip()}" + (f" + uncommitted {digest} in {', '.join(dirty)}"
                                                                 if dirty else " (clean)")


def load_run(path: Path) -> Run:
    """A run saved as JSON, for `--report`."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    callers = []
    for c in doc.pop("results"):
        c["rounds"] = [Round(**x) for x in c["rounds"]]
        callers.append(Caller(**c))
    for k in ("load_before", "load_after"):
        doc[k] = tuple(doc[k])
    return Run(**doc, results=callers)


async def bench(args: argparse.Namespace) -> int:
    reason = require_programs("baresip", "espeak-ng", "sox", "dumpcap", "ip")
    if reason:
        print(reason, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("needs root (ip netns)", file=sys.stderr)
        return 2
    rows_all = read_dev_set(Path(args.set))
    picked = subset(rows_all, args.callers) if args.callers < len(rows_all) else rows_all
    names = [f"{v}@{s}/{pi}" for v, s, pi in VARIANTS]
    rows = [(text, intent, names[i % len(names)]) for i, (text, intent) in enumerate(picked)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(args.workdir or f"/tmp/ivr-confirm-{stamp}")
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    out = REPO / "bench" / "results" / f"ivr_confirm-{stamp}.json"
    print(f"uptime: {load.uptime()}", flush=True)
    with NetNs(workdir=work) as ns:
        r = await run_once(ns, work, rows, args, "run")
    for line in report(r):
        print(line, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(asdict(r), indent=1, default=list, ensure_ascii=False))
    print(f"uptime: {load.uptime()}")
    print(f"json: {out}; work dir: {work}")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--callers", type=int, default=10, help="calls, one caller each (lines of the set spread over intents)")
    p.add_argument("--intervals", type=float, default=2.0, help="seconds between arrivals")
    p.add_argument("--one-at-a-time", action="store_true", help="each call starts when the previous one ended")
    p.add_argument("--set", default=str(BLIND), help="TSV of utterance, intent (default: tests/data/routing_blind.tsv)")
    p.add_argument("--yes", default="sí", help="what the caller says to a right guess (e.g. 'sí, eso es')")
    p.add_argument("--no", default="no", help="what the caller says to a wrong guess")
    p.add_argument("--repeats", type=int, default=1, help="times a caller says the request again when asked again")
    p.add_argument("--answer-pause", type=float, default=0.7, help="silence after a prompt before the caller answers, s")
    p.add_argument("--no-audio", type=float, default=6.0,
                   help="answer anyway when no prompt audio is heard this long after the question appears, s")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between reads of each live call's record")
    p.add_argument("--linger", type=float, default=6.0, help="seconds a caller stays after the intent is final")
    p.add_argument("--call-timeout", type=float, default=180.0, help="hang up a call after this long, s")
    p.add_argument("--nice", type=int, default=-10, help="autogroup nice of the service (0: none)")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service (repeatable)")
    p.add_argument("--keep", action="store_true", help="keep the packet capture")
    p.add_argument("--workdir", help="where logs, WAVs and captures go (default /tmp/ivr-confirm-<time>)")
    p.add_argument("--max-minutes", type=float, default=20.0, help="place no new call after this long")
    p.add_argument("--report", metavar="JSON", help="print the summary of a saved run and exit")
    args = p.parse_args()
    if args.report:
        print("\n".join(report(load_run(Path(args.report)))))
        return
    raise SystemExit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
