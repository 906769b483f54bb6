"""Speech plumbing without the heavy models: WAV I/O, framing, endpointing, prompt cache, model fetch,
engine choice. (espeak-ng is used as the source of real speech: it renders in milliseconds.)"""

from __future__ import annotations

import http.server
import io
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from config.speech import SpeechConfig
from core.audio import FRAME_BYTES
from core.errors import Unavailable
from speech import models
from speech.audio import AudioError, Framer, read_wav, split_frames, to_pcm16, ulaw_roundtrip, wav_bytes
from speech.cache import PromptCache
from speech.endpoint import BargeIn, Endpointer
from speech.engines import _stt_choice, _tts_choice
from speech.stt import Alternative, SttResult, _collapse_repeats, normalize, snap_to_grammar, transcribe_checked
from speech.tts import EspeakTts, frames_8k, split_sentences

SILENCE = b"\x00" * FRAME_BYTES


@pytest.fixture(scope="module")
def spoken() -> list[bytes]:
    return list(frames_8k(EspeakTts("es", speed=150), "necesito hablar con un funcionario"))


def _noise(seconds: float, level: float = 0.3) -> list[bytes]:
    rng = np.random.default_rng(7)
    return split_frames(to_pcm16(rng.normal(0, level, int(8000 * seconds)).astype(np.float32)))


# ---- audio ----


def _wav(rate: int, width: int, channels: int, n: int = 800) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01" * n * width * channels)
    return buf.getvalue()


@pytest.mark.parametrize(("rate", "width", "channels"), [(8000, 2, 1), (16000, 2, 2), (44100, 1, 1), (48000, 4, 2)])
def test_read_wav_any_rate_width_channels(rate: int, width: int, channels: int) -> None:
    audio, got_rate = read_wav(_wav(rate, width, channels))
    assert got_rate == rate and audio.dtype == np.float32 and len(audio) == 800
    assert float(np.max(np.abs(audio))) <= 1.0


@pytest.mark.parametrize("data", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", b"ID3 this is an mp3", _wav(8000, 3, 1)])
def test_read_wav_bad_input_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(AudioError) as exc:
        read_wav(data)
    assert exc.value.status_code == 422 and exc.value.message


def test_read_wav_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="cannot open"):
        read_wav(tmp_path / "nope.wav")


def test_framer_cuts_exact_frames() -> None:
    f = Framer()
    out = [*f.push(b"\x01" * 500), *f.push(b"\x02" * 500), *f.flush()]
    assert [len(x) for x in out] == [FRAME_BYTES] * 4
    assert out[-1].endswith(b"\x00")


def test_ulaw_roundtrip_keeps_length_and_shape() -> None:
    pcm = to_pcm16(np.sin(np.linspace(0, 100, 8000)).astype(np.float32) * 0.5)
    back = ulaw_roundtrip(pcm)
    assert len(back) == len(pcm)
    a, b = np.frombuffer(pcm, "<i2").astype(float), np.frombuffer(back, "<i2").astype(float)
    assert np.corrcoef(a, b)[0, 1] > 0.99


# ---- endpointing ----


def _run(ep: Endpointer, frames: list[bytes]) -> list[tuple[int, str]]:
    events = []
    for i, f in enumerate(frames):
        e = ep.feed(f)
        if e:
            events.append((i, e))
        if e in ("end", "no_input", "max_length"):
            break
    return events


def test_endpoint_speech_then_silence(spoken: list[bytes]) -> None:
    ep = Endpointer(end_silence_ms=600)
    events = _run(ep, [SILENCE] * 25 + spoken + [SILENCE] * 100)
    assert [e for _, e in events] == ["speech", "end"]
    end_at = events[-1][0]
    assert end_at - (25 + len(spoken)) <= 600 // 20 + 2  # ends about end_silence_ms after the last word
    assert 1500 < ep.speech_ms < len(spoken) * 20 + 700


def test_endpoint_no_input_on_silence_and_white_noise() -> None:
    assert _run(Endpointer(no_input_ms=1000), [SILENCE] * 500) == [(49, "no_input")]
    assert _run(Endpointer(no_input_ms=2000), _noise(5)) == [(99, "no_input")]


def test_endpoint_max_length_on_endless_speech(spoken: list[bytes]) -> None:
    events = _run(Endpointer(max_ms=2000, end_silence_ms=2000), spoken * 20)
    assert events[-1][1] == "max_length"


def test_endpoint_rejects_wrong_frame_size() -> None:
    with pytest.raises(ValueError, match="320 bytes"):
        Endpointer().feed(b"\x00" * 100)


def test_barge_in(spoken: list[bytes]) -> None:
    b = BargeIn(min_speech_ms=200)
    assert not any(b.feed(f) for f in [SILENCE] * 50 + _noise(2, 0.05))
    hits = [i for i, f in enumerate(spoken) if b.feed(f)]
    assert hits and hits[0] < 40  # within 0.8 s of speech
    b.reset()
    assert not b.feed(SILENCE)


# ---- prompt cache ----


def test_prompt_cache_renders_once_and_rebuilds_on_config_change(tmp_path: Path) -> None:
    calls: list[str] = []

    def render(text: str) -> bytes:
        calls.append(text)
        return b"\x10\x00" * 1000

    cache = PromptCache(tmp_path, "espeak|es|160|50")
    frames = cache.get("Bienvenido.", render)
    assert len(frames) == 7 and all(len(f) == FRAME_BYTES for f in frames)
    assert cache.get("Bienvenido.", render) == frames
    assert PromptCache(tmp_path, "espeak|es|160|50").get("Bienvenido.", render) == frames  # from the file
    assert calls == ["Bienvenido."]
    other = PromptCache(tmp_path, "espeak|es|180|50")  # speed changed: new key, rendered again
    other.get("Bienvenido.", render)
    assert calls == ["Bienvenido.", "Bienvenido."]
    assert other.sync(["Bienvenido.", "Adiós."], render) == {"prompts": 2, "rendered": 1, "removed": 1}
    assert len(list(tmp_path.glob("*.wav"))) == 2


def test_prompt_cache_rerenders_a_damaged_file(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path, "x")
    cache.path("hola").parent.mkdir(parents=True, exist_ok=True)
    cache.path("hola").write_bytes(b"garbage")
    assert len(cache.get("hola", lambda t: b"\x00\x00" * 160)) == 1
    assert read_wav(cache.path("hola"))[1] == 8000


# ---- text helpers ----


def test_split_sentences_and_grammar_snapping() -> None:
    assert split_sentences("Hola. ¿Qué tal? Bien") == ["Hola.", "¿Qué tal?", "Bien"]
    assert normalize("¡Sí, señor!") == "si senor"
    r = snap_to_grammar("si claro", ["sí", "no"])
    assert r.text == "sí" and r.confidence > 0.6 and r.raw_text == "si claro"
    assert snap_to_grammar("", ["sí", "no"]).text == ""
    assert snap_to_grammar("hipopótamo azul", ["sí", "no"]).text == ""


def test_espeak_text_goes_through_stdin_not_argv() -> None:
    frames = list(frames_8k(EspeakTts("es"), "--help me"))  # would be an option if passed as an argument
    assert len(frames) > 20


# ---- model downloads (loopback only) ----


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"not the model"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_fetch_refuses_a_wrong_checksum(tmp_path: Path, mirror: str) -> None:
    with pytest.raises(models.FetchError, match="checksum mismatch"):
        models.fetch(["piper-es"], models_dir=tmp_path, base_url=mirror, timeout=5)
    assert not list(tmp_path.rglob("*.onnx*"))  # nothing half-installed


def test_fetch_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(models.FetchError, match="cannot download"):
        models.fetch(["vosk-es"], models_dir=tmp_path, base_url="http://127.0.0.1:9", timeout=5)


def test_cli_fetch_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from atiende.cli import main

    assert main(["models", "fetch", "--dir", str(tmp_path), "--mirror", "http://127.0.0.1:9", "--timeout", "5"]) == 1
    assert "cannot download" in capsys.readouterr().err


def test_official_sources_are_pinned() -> None:
    for files in models.DOWNLOADS.values():
        for d in files:
            assert d.url.startswith("https://") and len(d.sha256) == 64 and d.size > 0


# ---- engine choice ----


def test_auto_uses_whisper_and_espeak_without_spanish_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    cfg = SpeechConfig()
    if models.installed_vosk_es() is None:
        assert _stt_choice(cfg)[0] == "whisper"
    if models.installed_piper_es() is None:
        assert _tts_choice(cfg) == ("espeak", None)


def test_configured_models_win(tmp_path: Path) -> None:
    (tmp_path / "vosk" / "am").mkdir(parents=True)
    voice = tmp_path / "v.onnx"
    voice.write_bytes(b"")
    cfg = SpeechConfig(vosk_model=str(tmp_path / "vosk"), piper_voice=str(voice))
    assert _stt_choice(cfg) == ("vosk", tmp_path / "vosk")
    assert _tts_choice(cfg) == ("piper", voice)


def test_forced_engine_without_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(models, "installed_vosk_es", lambda models_dir=tmp_path: None)
    with pytest.raises(Unavailable, match="models fetch"):
        _stt_choice(SpeechConfig(stt_engine="vosk"))


def test_runtime_exposes_speech(loaded: object) -> None:
    from atiende.runtime import Runtime
    from speech.service import Speech

    rt = Runtime(loaded)  # type: ignore[arg-type]
    assert isinstance(rt.speech, Speech)
    assert rt.speech.cfg.end_silence_ms == 600
    detector = rt.speech.BargeIn()
    assert isinstance(detector, BargeIn) and detector.need == rt.speech.cfg.barge_in_ms // 20
    assert not detector.feed(SILENCE)
    rt.speech.close()


def test_wav_bytes_roundtrip() -> None:
    audio, rate = read_wav(wav_bytes(b"\x00\x10" * 100, 8000))
    assert rate == 8000 and len(audio) == 100


# ---- whisper output clean-up and the second opinion ----------------------------------------------


@pytest.mark.parametrize(("heard", "kept"), [
    ("Analid. Analid. Analid.", "Analid."),
    ("El teo del teo del teo del teo del te", "El teo del"),
    ("1-1-1-1-1-", "1"),
    ("Quiero pagar la tasa de la ITV", "Quiero pagar la tasa de la ITV"),
    ("sí sí", "sí sí"),
    ("", ""),
])
def test_collapse_repeats(heard: str, kept: str) -> None:
    assert _collapse_repeats(heard) == kept


class _TwoOpinions:
    name, streaming = "fake", False

    def __init__(self, first: str, second: str | None) -> None:
        self.first, self.second = first, second
        self.calls: list[str] = []
        if second is None:
            self.second_opinion = None  # type: ignore[assignment]

    def _result(self, text: str) -> SttResult:
        return SttResult(text=text, confidence=0.5, alternatives=[Alternative(text=text, confidence=0.5)] if text else [])

    def stream(self, hints: list[str] | None = None, grammar: list[str] | None = None) -> None:
        raise NotImplementedError

    def transcribe(self, audio: np.ndarray, rate: int, hints: list[str] | None = None,
                   grammar: list[str] | None = None, *, retry: bool = True) -> SttResult:
        self.calls.append("first")
        return self._result(self.first)

    def second_opinion(self, audio: np.ndarray, rate: int, hints: list[str] | None = None,
                       grammar: list[str] | None = None) -> SttResult:
        self.calls.append("second")
        return self._result(self.second or "")


def test_second_opinion_only_when_the_first_answer_does_not_fit() -> None:
    audio = np.zeros(8000, dtype=np.float32)

    def accept(text: str) -> bool:
        return "itv" in text.lower()

    ok = _TwoOpinions("pagar la ITV", "pagar la ITV")
    assert transcribe_checked(ok, audio, 8000, accept=accept).text == "pagar la ITV" and ok.calls == ["first"]
    both = _TwoOpinions("pano la ite", "pago la ITV")
    res = transcribe_checked(both, audio, 8000, accept=accept)
    assert (res.text, res.second_opinion, both.calls) == ("pago la ITV", True, ["first", "second"])
    assert [a.text for a in res.alternatives] == ["pago la ITV", "pano la ite"]  # the first one kept
    neither = _TwoOpinions("pano la ite", "gracias")
    assert transcribe_checked(neither, audio, 8000, accept=accept).text == "pano la ite"
    no_second = _TwoOpinions("", None)  # vosk: no second opinion to ask
    assert transcribe_checked(no_second, audio, 8000, accept=accept).text == ""
    assert transcribe_checked(_TwoOpinions("x", "pago la ITV"), audio, 8000).text == "x"  # nobody to judge
