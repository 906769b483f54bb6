"""IVR containment and engine cost on text, over the routing evaluation sets.

    .venv/bin/python bench/bench_ivr.py [--sets dev,extra,blind] [--limit N]

Each utterance is the first thing a caller says to the default flows (line open, Monday 10:00);
a scripted caller then answers the follow-up questions the way a real one would ("sí" to a
confirmation, a town, a file number, a complaint text, "no" to "¿algo más?"). Prints:

- containment: share of contacts resolved by self-service among those whose expected intent
  has a self-service answer (the issue's figure; the scenario's baseline is 61 %, Sevilla's 010 43 %);
- wrong answers: contacts that got a self-service answer for another intent than expected;
- out-of-scope contacts ("none") sent to a service instead of a person or a re-ask;
- engine time per contact (routing, flows, answers; no speech), p50/p95.

Nothing is written: tickets and queues are dry-run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atiende.runtime import Runtime  # noqa: E402
from config.loader import load  # noqa: E402
from core.clock import FixedClock  # noqa: E402
from ivr.contact import Ask, Heard, Recorded  # noqa: E402
from ivr.textio import OutMessage, ScriptedIO  # noqa: E402

SETS = {"dev": REPO.parent / "shared" / "eval" / "routing_dev.tsv", "extra": REPO / "tests" / "data" / "routing_extra.tsv",
        "blind": REPO / "tests" / "data" / "routing_blind.tsv"}
AT = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/Madrid"))


class Caller(ScriptedIO):
    """Says its first line, then answers each question as a cooperative caller would."""

    def __init__(self, first: str) -> None:
        super().__init__([])
        self.first: str | None = first
        self.turns = 0

    def reply(self, question: str) -> str:
        q = question.lower()
        if "algo más" in q or "repita" in q or "buzón" in q:
            return "no"
        if "¿quiere" in q:
            return "sí"
        if "localidad" in q:
            return "Mérida"
        if "expediente" in q:
            return "2026000123"
        if "referencia" in q:
            return "no la tengo"
        if "organismo" in q or "consejería" in q:
            return "la consejería de hacienda"
        return "no"

    async def gather(self, ask: Ask) -> Heard:
        self.turns += 1
        if self.turns > 12:
            return await super().gather(ask)  # silence: the flows hand over or end
        self.out.append(OutMessage(ask.text, "question"))
        if self.first is not None:
            text, self.first = self.first, None
        else:
            text = self.reply(ask.text)
        return Heard(kind="speech", text=text, confidence=1.0, engine="text")

    async def record(self, text: str, *, max_s: float, end_silence_s: float,
                     sink: Callable[[bytes], None] | None = None) -> Recorded:
        return Recorded(text="La atención en la oficina fue muy lenta y nadie me informó.", confidence=1.0)


def read_set(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#") or "\t" not in line:
            continue
        text, intent = line.rsplit("\t", 1)
        rows.append((text.strip(), intent.strip()))
    return rows


async def run(rows: list[tuple[str, str]]) -> None:
    rt = Runtime(load(None, env={}))
    eligible_intents = await rt.ivr.self_service_intents()
    eligible = contained = wrong = oos = oos_routed = 0
    times: list[float] = []
    for text, expected in rows:
        io = Caller(text)
        t = time.perf_counter()
        session = await rt.ivr.run(io, save=False, clock=FixedClock(AT))
        times.append((time.perf_counter() - t) * 1000)
        if expected in eligible_intents:
            eligible += 1
            if session.outcome == "self_service" and session.intent == expected:
                contained += 1
            elif session.outcome == "self_service":
                wrong += 1
        if expected == "none":
            oos += 1
            if session.answered:
                oos_routed += 1
    times.sort()
    print(f"contacts: {len(rows)}  self-service intents: {', '.join(sorted(eligible_intents))}")
    print(f"containment: {contained}/{eligible} = {contained / max(eligible, 1):.1%}  "
          f"(wrong self-service answers: {wrong})")
    print(f"out of scope answered by a service: {oos_routed}/{oos}")
    print(f"engine time per contact: p50 {statistics.median(times):.1f} ms  p95 {times[int(0.95 * (len(times) - 1))]:.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="dev,extra", help="comma-separated: dev, extra, blind")
    ap.add_argument("--limit", type=int, default=0, help="at most N utterances (0: all)")
    args = ap.parse_args()
    rows: list[tuple[str, str]] = []
    for name in args.sets.split(","):
        path = SETS[name.strip()]
        if path.exists():
            rows += read_set(path)
    if args.limit:
        rows = rows[: args.limit]
    asyncio.run(run(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
