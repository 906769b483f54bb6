"""The Spanish audio test set: a reproducible recipe, no recorded files in the repository.

Recipe (`build`): for each in-scope line of `shared/eval/routing_dev.tsv` (utterance, intent; the
"none" lines are out of scope), espeak-ng speaks the utterance with one of the VARIANTS below
(round robin over the lines: several voices, speeds and pitches), soxr resamples it from 22,050 Hz to
8 kHz, and a G.711 µ-law encode/decode round trip gives what a phone line delivers. Each item is
then written as an 8 kHz 16-bit mono WAV file, named by a hash of its recipe so a rebuild reuses it.

`score` transcribes every item (Speech engines, routing hints) and routes the text with the router;
`python -m speech.testset [--limit N]` prints the score.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from speech.audio import RATE, read_wav, to_float, to_pcm16, ulaw_roundtrip, write_wav
from speech.tts import EspeakTts, render

DEV_SET = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "routing_dev.tsv"

# (espeak-ng voice, words per minute, pitch): Castilian and Latin American voices, three Klatt
# variants, four speeds and pitches. The Klatt synthesiser is used because Whisper base hears
# espeak-ng's default formant voice far worse (on the eight hardest lines: 0/8 routed right with the
# default voice, 4/8 with +klatt; on clean 16 kHz audio 2/8 vs 6/8): that gap measures espeak's
# default voice, not what callers sound like.
VARIANTS: tuple[tuple[str, int, int], ...] = (
    ("es+klatt", 140, 50),
    ("es-419+klatt2", 150, 45),
    ("es+klatt4", 130, 55),
    ("es+klatt", 160, 40),
)


@dataclass(frozen=True)
class Item:
    text: str
    intent: str
    voice: str
    speed: int
    pitch: int
    path: Path

    @property
    def variant(self) -> str:
        return f"{self.voice}@{self.speed}/{self.pitch}"


def read_dev_set(path: Path = DEV_SET, in_scope_only: bool = True) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with path.open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if not row or row[0].startswith("#") or len(row) < 2:
                continue
            text, intent = row[0].strip(), row[1].strip()
            if in_scope_only and intent == "none":
                continue
            rows.append((text, intent))
    return rows


def subset(rows: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """n lines spread evenly over the set (every intent represented), deterministic."""
    if n >= len(rows):
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def phone_audio(text: str, voice: str, speed: int, pitch: int) -> bytes:
    """espeak-ng -> 8 kHz -> G.711 µ-law and back: 16-bit PCM as the line would deliver it."""
    audio = render(EspeakTts(voice, speed=speed, pitch=pitch), text, RATE)
    return ulaw_roundtrip(to_pcm16(audio))


def build(directory: Path, rows: Iterable[tuple[str, str]], variants: tuple[tuple[str, int, int], ...] = VARIANTS,
          all_variants: bool = False) -> list[Item]:
    """Generate (or reuse) the WAV files; `all_variants` speaks every line with every variant."""
    directory.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    for i, (text, intent) in enumerate(rows):
        chosen = variants if all_variants else (variants[i % len(variants)],)
        for voice, speed, pitch in chosen:
            key = hashlib.sha256(f"{text}|{voice}|{speed}|{pitch}|ulaw8k".encode()).hexdigest()[:16]
            path = directory / f"{key}.wav"
            if not path.is_file():
                write_wav(path, phone_audio(text, voice, speed, pitch), RATE)
            items.append(Item(text, intent, voice, speed, pitch, path))
    return items


@dataclass
class Score:
    total: int
    right: int
    seconds: float
    rows: list[tuple[Item, str, str | None]]  # item, transcript, routed intent

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else 0.0

    def report(self, verbose: bool = False) -> str:
        lines = []
        if verbose:
            for item, text, got in self.rows:
                mark = "ok " if got == item.intent else "BAD"
                lines.append(f"{mark} {item.intent:18} {got or '-':18} {item.variant:14} {item.text!r} -> {text!r}")
        lines.append(f"right intent: {self.right}/{self.total} = {100 * self.accuracy:.1f} % "
                     f"({self.seconds:.1f} s of speech-to-text, {self.seconds / max(self.total, 1):.2f} s per utterance)")
        return "\n".join(lines)


def score(items: list[Item], transcribe: Callable[[bytes], str], route: Callable[[str], str | None]) -> Score:
    rows: list[tuple[Item, str, str | None]] = []
    right = 0
    spent = 0.0
    for item in items:
        audio, rate = read_wav(item.path)
        assert rate == RATE
        t = time.perf_counter()
        text = transcribe(to_pcm16(to_float(audio)))
        spent += time.perf_counter() - t
        got = route(text) if text else None
        right += got == item.intent
        rows.append((item, text, got))
    return Score(len(items), right, spent, rows)


def router_and_hints() -> tuple[Callable[[str], str | None], list[str]]:
    """The router from the routing package, built offline from the default config."""
    from atiende.runtime import Runtime
    from config.loader import load
    from routing.router_service import RouterService

    router = RouterService(Runtime(load(None, env={}))).get_offline()

    def route(text: str) -> str | None:
        return router.route(text, channel="voice").intent

    return route, router.hints()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="build the Spanish audio test set and score speech-to-text + routing")
    ap.add_argument("--dir", type=Path, default=Path("var/testset"))
    ap.add_argument("--limit", type=int, default=0, help="lines of the dev set (0 = all in-scope lines)")
    ap.add_argument("--all-variants", action="store_true", help="every line with every voice variant")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--dump", type=Path, help="write utterance, intent, variant, transcript, routed intent as TSV "
                                              "(to tune the router on real recogniser output without re-running it)")
    args = ap.parse_args(argv)

    from config.loader import load
    from speech.service import load_stt

    rows = read_dev_set()
    if args.limit:
        rows = subset(rows, args.limit)
    items = build(args.dir, rows, all_variants=args.all_variants)
    route, hints = router_and_hints()
    engine = load_stt(load(None, env={}).settings.speech)

    def transcribe(pcm: bytes) -> str:
        return engine.transcribe(to_float(pcm), RATE, hints).text

    result = score(items, transcribe, route)
    print(result.report(args.verbose))
    if args.dump:
        with args.dump.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(["# utterance", "intent", "variant", "transcript", "routed"])
            for item, text, got in result.rows:
                w.writerow([item.text, item.intent, item.variant, text, got or "none"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
