"""The Spanish audio test set: a reproducible recipe, no recorded files in the repository.

Recipe (`build`): for each in-scope line of `shared/eval/routing_dev.tsv` (utterance, intent; the
"none" lines are out of scope), espeak-ng speaks the utterance with one of the VARIANTS below
(round robin over the lines: several voices, speeds and pitches), soxr resamples it from 22,050 Hz to
8 kHz, and a G.711 µ-law encode/decode round trip gives what a phone line delivers. Each item is
then written as an 8 kHz 16-bit mono WAV file, named by a hash of its recipe so a rebuild reuses it.

`score` transcribes every item as the IVR does (Speech engine, routing hints, a second opinion
when the router finds nothing in the first transcript) and routes the text with the router on the
voice channel (a clear guess under the threshold is offered for confirmation and counts as routed;
the report gives how many). `python -m atiende.testset [--set dev|blind] [-v]` prints the score.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from core.audio import RATE
from speech.audio import read_wav, to_float, to_pcm16, ulaw_roundtrip, write_wav
from speech.stt import SttEngine, transcribe_checked
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
    total: int  # in-scope items
    right: int  # in-scope items routed to their intent (directly or offered for confirmation)
    seconds: float
    rows: list[tuple[Item, str, str | None]]  # item, transcript, routed intent
    confirmed: int = 0  # of `right`: offered for confirmation ("¿Quiere ...?") rather than taken directly
    none_total: int = 0  # out-of-scope items ("none" lines)
    none_rejected: int = 0

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else 0.0

    def by_variant(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for item, _text, got in self.rows:
            if item.intent != "none":
                ok, n = out.get(item.variant, (0, 0))
                out[item.variant] = (ok + (got == item.intent), n + 1)
        return out

    def report(self, verbose: bool = False) -> str:
        lines = []
        if verbose:
            for item, text, got in self.rows:
                mark = "ok " if (got or "none") == item.intent else "BAD"
                lines.append(f"{mark} {item.intent:18} {got or '-':18} {item.variant:14} {item.text!r} -> {text!r}")
        if verbose:
            lines += [f"  {v:22} {ok}/{n}" for v, (ok, n) in sorted(self.by_variant().items())]
        items = self.total + self.none_total
        lines.append(f"right intent: {self.right}/{self.total} = {100 * self.accuracy:.1f} % "
                     f"({self.right - self.confirmed} taken directly, {self.confirmed} offered for confirmation); "
                     f"out of scope rejected {self.none_rejected}/{self.none_total} "
                     f"({self.seconds:.1f} s of speech-to-text, {self.seconds / max(items, 1):.2f} s per utterance)")
        return "\n".join(lines)


def score(items: list[Item], transcribe: Callable[[bytes], str],
          route: Callable[[str], tuple[str | None, bool]]) -> Score:
    """`route` gives (intent, needs confirmation); "none" items count as right when nothing is routed."""
    rows: list[tuple[Item, str, str | None]] = []
    result = Score(0, 0, 0.0, rows)
    for item in items:
        audio, rate = read_wav(item.path)
        assert rate == RATE
        t = time.perf_counter()
        text = transcribe(to_pcm16(to_float(audio)))
        result.seconds += time.perf_counter() - t
        got, confirm = route(text) if text else (None, False)
        if item.intent == "none":
            result.none_total += 1
            result.none_rejected += got is None
        else:
            result.total += 1
            result.right += got == item.intent
            result.confirmed += got == item.intent and confirm
        rows.append((item, text, got))
    return result


def router_and_hints() -> tuple[Callable[[str], tuple[str | None, bool]], list[str]]:
    """The router from the routing package, built offline from the default config, on the voice channel."""
    from config.loader import load
    from routing.router import Router

    settings = load(None, env={}).settings
    router = Router(settings.routing, settings.knowledge)

    def route(text: str) -> tuple[str | None, bool]:
        res = router.route(text, channel="voice")
        return res.intent, res.needs_confirmation

    return route, router.hints()


def transcriber(engine: SttEngine, hints: list[str],
                route: Callable[[str], tuple[str | None, bool]]) -> Callable[[bytes], str]:
    """What the IVR does with an answer to "¿En qué puedo ayudarle?": transcribe; if the router finds no
    intent in it, ask the engine for its second opinion (`transcribe_checked`)."""

    def accept(text: str) -> bool:
        return route(text)[0] is not None

    def transcribe(pcm: bytes) -> str:
        return transcribe_checked(engine, to_float(pcm), RATE, hints, None, accept).text

    return transcribe


BLIND_SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "routing_blind.tsv"
SETS = {"dev": DEV_SET, "blind": BLIND_SET}


def parse_variant(spec: str) -> tuple[str, int, int]:
    """"es+klatt:140:40" -> ("es+klatt", 140, 40)."""
    try:
        voice, speed, pitch = spec.rsplit(":", 2)
        return voice, int(speed), int(pitch)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected VOICE:SPEED:PITCH, e.g. es+klatt:140:40, not {spec!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="build the Spanish audio test set and score speech-to-text + routing")
    ap.add_argument("--dir", type=Path, default=Path("var/testset"))
    ap.add_argument("--set", action="append", default=[], metavar="NAME|TSV",
                    help="dev (shared/eval/routing_dev.tsv, the default), blind (tests/data/routing_blind.tsv, never "
                         "tuned on) or a utterance<TAB>intent file; repeatable")
    ap.add_argument("--limit", type=int, default=0, help="in-scope lines per set (0 = all)")
    ap.add_argument("--all-variants", action="store_true", help="every line with every voice variant")
    ap.add_argument("--variant", action="append", type=parse_variant, default=[], metavar="VOICE:SPEED:PITCH",
                    help="speak with these espeak-ng variants instead of the recipe's (repeatable)")
    ap.add_argument("--no-none", action="store_true", help="leave out the out-of-scope ('none') lines")
    ap.add_argument("--beam", type=int, default=0, help="Whisper's beam size instead of speech.whisper_beam_size "
                                                       "(1: greedy, the speed lever of issue 14)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--dump", type=Path, help="write utterance, intent, variant, transcript, routed intent as TSV "
                                              "(to tune the router on real recogniser output without re-running it)")
    args = ap.parse_args(argv)

    from config.loader import load
    from speech.service import load_stt

    rows: list[tuple[str, str]] = []
    for name in args.set or ["dev"]:
        path = SETS.get(name, Path(name))
        in_scope = read_dev_set(path)
        rows += subset(in_scope, args.limit) if args.limit else in_scope
        if not args.no_none:
            rows += [r for r in read_dev_set(path, in_scope_only=False) if r[1] == "none"]
    variants = tuple(args.variant) or VARIANTS
    items = build(args.dir, rows, variants, all_variants=args.all_variants)
    route, hints = router_and_hints()
    speech_cfg = load(None, env={}).settings.speech
    if args.beam:
        speech_cfg = speech_cfg.model_copy(update={"whisper_beam_size": args.beam})
    engine = load_stt(speech_cfg)

    result = score(items, transcriber(engine, hints, route), route)
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
