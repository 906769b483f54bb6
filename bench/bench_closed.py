"""Closed answers (issue 17, 7): a confirmation's "sí"/"no" heard by open transcription (the baseline, what the
IVR did before) vs scored against the question's phrases (`speech.stt.ClosedSet`, `ivr.engine.YES_NO`).

    .venv/bin/python bench/bench_closed.py               # four espeak voices over G.711, answers and non-answers
    .venv/bin/python bench/bench_closed.py --repeat 5    # more timing samples
    .venv/bin/python bench/bench_closed.py --detail      # also each one's voiced length and best score per value

For every spoken answer and voice: what the open transcript makes of it (`ivr.engine.yes_or_no`), what the closed
set chooses and by what lead, and the time each took on this machine (the engine's own threads, nothing else).
`--detail` adds what a rule against a wrong choice could look at: the voiced length (webrtcvad, as the endpointer),
the best phrase score of sí, of no and of the fillers, and the transcript the engine dropped (a loop, an invention).
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
from speech.endpoint import MIN_RMS, voiced
from speech.engines import load_stt
from speech.stt import pick

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
    ap.add_argument("--detail", action="store_true", help="each utterance's voiced length, best scores, dropped text")
    args = ap.parse_args()
    engine = load_stt(SpeechConfig(stt_engine="whisper"))
    score_phrases = getattr(engine, "score_phrases", None)
    if score_phrases is None:
        raise SystemExit(f"{engine.name} cannot score phrases")
    import webrtcvad

    vad = webrtcvad.Vad(2)
    details = []
    rows = []
    t_open: list[float] = []
    t_closed: list[float] = []
    for said, meant in ANSWERS:
        for variant in VARIANTS:
            pcm = phone_audio(said, *variant)
            audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
            for i in range(max(1, args.repeat)):
                t = time.perf_counter()
                heard = engine.transcribe(audio, 8000, ["sí", "no"])
                text = heard.text
                t_open.append(time.perf_counter() - t)
                t = time.perf_counter()
                scores = score_phrases(audio, 8000, YES_NO)  # what WhisperEngine.choose does
                value, lead = pick([(v, sc) for v, _, sc in scores], YES_NO.margin) if scores else (None, 0.0)
                t_closed.append(time.perf_counter() - t)
                if i == 0 and args.detail:
                    best: dict[str | None, tuple[float, str]] = {}
                    for v, form, sc in scores:
                        best[v] = max(best.get(v, (-99.0, "")), (sc, form))
                    ms = 20 * sum(voiced(vad, pcm[j:j + 320], MIN_RMS) for j in range(0, len(pcm) - 319, 320))
                    details.append((said, variant[0], ms, best, heard.raw_text))
                if i == 0:
                    yn = yes_or_no(text)
                    open_yn = None if yn is None else ("sí" if yn else "no")
                    few = len(text.split()) <= 1  # speech.stt.closed_fits: words stay the transcript's
                    rows.append((said, meant, variant[0], text, open_yn, value, lead,
                                 open_yn or (value if few else None)))
    print(f"{'said':18} {'meant':5} {'voice':14} {'open transcript':28} {'open':5} {'closed':6} lead")
    for said, meant, voice, text, open_yn, value, lead, _ in rows:
        print(f"{said:18} {meant or '-':5} {voice:14} {text[:28]!r:28} {open_yn or '-':5} {value or '-':6} {lead:.1f}")

    if details:
        print(f"\n{'said':18} {'voice':14} voiced  {'best sí':18} {'best no':18} {'best filler':24} dropped")
        for said, voice, ms, best, raw in details:
            cells = [f"{best[v][0]:5.1f} {best[v][1][:12]!r:12}" if v in best else "-" for v in ("sí", "no", None)]
            print(f"{said:18} {voice:14} {ms:4} ms {cells[0]:18} {cells[1]:18} {cells[2]:24} {raw or ''!r}")
        print()

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
