"""Closed answers (issue 17, 7): a confirmation's "sí"/"no" heard by open transcription (the baseline, what the
IVR did before) vs scored against the question's phrases (`speech.stt.ClosedSet`, `ivr.engine.YES_NO`).

    .venv/bin/python bench/bench_closed.py               # four espeak voices over G.711, answers and non-answers
    .venv/bin/python bench/bench_closed.py --repeat 5    # more timing samples

For every spoken answer and voice: what the open transcript makes of it (`ivr.engine.yes_or_no`), what the closed
set chooses and by what lead, and the time each took on this machine (the engine's own threads, nothing else).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchstats import summary

from atiende.testset import VARIANTS, phone_audio
from config.speech import SpeechConfig
from ivr.engine import YES_NO, yes_or_no
from speech.engines import load_stt

# What the caller meant: "sí", "no", or None for an utterance that answers neither (must never be taken as one).
ANSWERS: list[tuple[str, str | None]] = [
    ("sí", "sí"), ("no", "no"), ("sí, eso es", "sí"), ("no, no es eso", "no"), ("vale", "sí"), ("claro", "sí"),
    ("que no", "no"), ("no gracias", "no"), ("correcto", "sí"),
    ("no lo sé", None), ("sí, no sé", None), ("no estoy seguro", None),
    ("hola", None), ("eh", None), ("cinco", None), ("tres", None), ("eso es", "sí"), ("quiero pedir cita", None),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="times each item is timed (the first result is scored)")
    args = ap.parse_args()
    engine = load_stt(SpeechConfig(stt_engine="whisper"))
    choose = getattr(engine, "choose", None)
    if choose is None:
        raise SystemExit(f"{engine.name} cannot score phrases")
    rows = []
    t_open: list[float] = []
    t_closed: list[float] = []
    for said, meant in ANSWERS:
        for variant in VARIANTS:
            audio = np.frombuffer(phone_audio(said, *variant), dtype=np.int16).astype(np.float32) / 32768
            for i in range(max(1, args.repeat)):
                t = time.perf_counter()
                text = engine.transcribe(audio, 8000, ["sí", "no"]).text
                t_open.append(time.perf_counter() - t)
                t = time.perf_counter()
                value, lead = choose(audio, 8000, YES_NO)
                t_closed.append(time.perf_counter() - t)
                if i == 0:
                    yn = yes_or_no(text)
                    open_yn = None if yn is None else ("sí" if yn else "no")
                    few = len(text.split()) <= 1  # speech.stt.closed_fits: words stay the transcript's
                    rows.append((said, meant, variant[0], text, open_yn, value, lead,
                                 open_yn or (value if few else None)))
    print(f"{'said':18} {'meant':5} {'voice':14} {'open transcript':28} {'open':5} {'closed':6} lead")
    for said, meant, voice, text, open_yn, value, lead, _ in rows:
        print(f"{said:18} {meant or '-':5} {voice:14} {text[:28]!r:28} {open_yn or '-':5} {value or '-':6} {lead:.1f}")

    def score(col: int) -> str:
        answers = [r for r in rows if r[1] is not None]
        others = [r for r in rows if r[1] is None]
        right = sum(r[col] == r[1] for r in answers)
        flipped = sum(r[col] is not None and r[col] != r[1] for r in answers)
        invented = sum(r[col] is not None for r in others)
        return (f"answers taken right {right}/{len(answers)}, taken as the opposite {flipped}, not taken "
                f"{len(answers) - right - flipped}; non-answers taken as sí/no {invented}/{len(others)}")

    print(f"open transcript (baseline): {score(4)}")
    print(f"closed set:                 {score(5)}")
    print(f"the transcript, then the closed set when it has no words or one (the IVR's order): {score(7)}")
    for name, xs in (("open decode", t_open), ("closed scoring", t_closed)):
        st = summary(xs)
        print(f"{name:15} s: p50 {st['p50']:.3f} / p95 {st['p95']:.3f} / p99 {st['p99']:.3f} / max {st['max']:.3f} "
              f"(n={len(xs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
