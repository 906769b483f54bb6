"""Natural-language routing: normalisation, numbers, entities, the router on the evaluation sets, garbage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.knowledge import KnowledgeConfig
from config.loader import Loaded
from config.routing import RoutingConfig
from routing.entities import extract_reference, extract_town, extract_unit, parse_yes_no
from routing.normalize import analyze, fold, normalize, phonetic, spelled_runs
from routing.numbers import words_to_digits
from routing.router import Router, RouteResult
from tests.conftest import REPO, shared_file

DATA = REPO / "tests" / "data"


@pytest.fixture(scope="module")
def router(loaded: Loaded) -> Router:
    return Router(loaded.settings.routing, loaded.settings.knowledge)


@pytest.fixture(scope="module")
def kb(loaded: Loaded) -> KnowledgeConfig:
    return loaded.settings.knowledge


def _rows(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            text, expected = line.split("\t")
            rows.append((text, expected.strip()))
    return rows


def _score(router: Router, path: Path) -> tuple[float, int, list[str]]:
    """(in-scope accuracy, out-of-scope lines wrongly routed, misses)."""
    rows = _rows(path)
    misses, right, routed_none = [], 0, 0
    for text, expected in rows:
        got = router.route(text, channel="chat").intent or "none"  # typed text: no voice confirmation floor
        if got == expected:
            right += expected != "none"
        else:
            misses.append(f"{text!r}: expected {expected}, got {got}")
            routed_none += expected == "none"
    in_scope = sum(1 for _, e in rows if e != "none")
    return right / in_scope, routed_none, misses


# ---- evaluation sets -----------------------------------------------------------------------


def test_dev_set(router: Router) -> None:
    accuracy, wrongly_routed, misses = _score(router, shared_file("eval/routing_dev.tsv"))
    assert accuracy >= 0.97, misses
    assert wrongly_routed == 0, misses


def test_held_out_sets(router: Router) -> None:
    # Written before tuning (extra) and never used for tuning (blind): guards against overfitting the dev set.
    accuracy, wrongly_routed, misses = _score(router, DATA / "routing_extra.tsv")
    assert accuracy >= 0.9, misses
    assert wrongly_routed <= 1, misses
    accuracy, wrongly_routed, misses = _score(router, DATA / "routing_blind.tsv")
    assert accuracy >= 0.8, misses
    assert wrongly_routed <= 1, misses


def test_voice_offers_a_clear_guess_for_confirmation(router: Router) -> None:
    # Recogniser output where the right intent scores under the threshold: rejected as typed text,
    # offered for confirmation ("¿Quiere ...?") on the voice channel.
    texts = ["Tengo un colinone consulta, y quiero saber la respuesta.", "A men por la tarde.",
             "Quiero primar sobre el nuevo plan de la Junta.", "El pano le da a la intención de vehículos."]
    guessed = 0
    for text in texts:
        typed = router.route(text, channel="chat")
        assert typed.intent is None
        top = typed.alternatives[0] if typed.alternatives else None
        second = typed.alternatives[1].confidence if len(typed.alternatives) > 1 else 0.0
        spoken = router.route(text, channel="voice")
        if top is not None and top.confidence >= router.voice_floor and top.confidence - second >= router.margin:
            assert spoken.intent == top.intent and spoken.needs_confirmation
            guessed += 1
        else:
            assert spoken.intent is None
    assert guessed >= 2
    # Small talk stays out of scope on voice too.
    for text in ("hola buenos días", "vale", "gracias adiós", "necesito un fontanero"):
        assert router.route(text, channel="voice").intent is None, text


def test_regression_set(router: Router) -> None:
    # Probes written while tuning (typos, recogniser slips, small talk): they keep config edits honest.
    accuracy, wrongly_routed, misses = _score(router, DATA / "routing_regression.tsv")
    assert accuracy >= 0.95, misses
    assert wrongly_routed <= 2, misses


def test_every_default_intent_has_confirm_question_and_queue(loaded: Loaded) -> None:
    cfg = loaded.settings.routing
    ids = {i.id for i in cfg.intents}
    assert ids == {"tasa_itv", "directorio", "oficinas", "miespacio", "queja_sugerencia", "estado_expediente",
                   "estado_consulta", "info_tramite", "cita_previa", "horario", "participacion", "hablar_agente"}
    for intent in cfg.intents:
        assert intent.confirm.startswith("¿") and intent.confirm.endswith("?")
    assert {i.id: i.queue for i in cfg.intents}["queja_sugerencia"] == "N2"
    assert cfg.dtmf_menus["main"]["0"] == "hablar_agente"


# ---- router behaviour --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("la y te b de mi coche", "tasa_itv"),  # STT slip for "la ITV"
        ("kiero pagar la itv", "tasa_itv"),  # by-ear spelling
        ("quisiera abonar la tasa de inspeccion tecnica", "tasa_itv"),  # synonym + no accents
        ("donde esta la ofisina de caseres", "oficinas"),
        ("QUIERO PONER UNA QUEJA!!!", "queja_sugerencia"),
        ("eh pues mire quería saber el horario de atención", "horario"),
        ("cero", "hablar_agente"),  # "also cero"
        ("la opción cuatro", "cita_previa"),  # a keypad option said aloud
        ("pagar la ite ve del coche", "tasa_itv"),  # recogniser slip, configured rewrite
        ("como va mi es pediente", "estado_expediente"),  # a word split in two
        ("el hrario de atencion", "horario"),  # typo: one edit
        ("donde queda la oficina de trujillo", "oficinas"),  # "queda" is a word, not a slip for "queja"
        ("quiero hablar con un o perador", "hablar_agente"),
    ],
)
def test_language_variants(router: Router, text: str, intent: str) -> None:
    assert router.route(text).intent == intent


@pytest.mark.parametrize("text", ["hola", "buenos días", "sí", "no", "vale gracias", "adiós", "qué tal",
                                  "quiero pedir una pizza", "me llamo Juan", "cuánto es dos más dos"])
def test_small_talk_and_unrelated_are_out_of_scope(router: Router, text: str) -> None:
    result = router.route(text)
    assert result.intent is None and result.queue is None
    assert not result.needs_confirmation


def test_result_shape_alternatives_and_confirmation(router: Router) -> None:
    result = router.route("quiero saber cómo va mi queja")
    assert result.intent == "estado_consulta"
    assert 0 <= result.confidence <= 1
    assert result.alternatives and result.alternatives[0].intent == "queja_sugerencia"
    assert all(a.confidence <= result.confidence for a in result.alternatives)
    public = result.public()
    assert list(public) == ["text", "intent", "confidence", "queue", "entities", "alternatives"]
    json.dumps(public)
    # A clear case does not need confirmation; the question exists for every intent.
    clear = router.route("quiero pedir cita previa")
    assert clear.intent == "cita_previa" and not clear.needs_confirmation
    assert router.confirm_question("tasa_itv") == "¿Quiere pagar o consultar la tasa de la ITV?"


def test_needs_confirmation_when_top_two_close() -> None:
    cfg = RoutingConfig.model_validate({
        "threshold": 0.5, "confirm_margin": 0.1,
        "intents": [{"id": "uno", "keywords": {"papel": 0.8}}, {"id": "dos", "keywords": {"papel": 0.75}}],
    })
    result = Router(cfg).route("un papel")
    assert result.intent == "uno" and result.needs_confirmation
    assert result.alternatives[0].intent == "dos"


def test_entities_in_route(router: Router) -> None:
    r = router.route("qué horario tiene la oficina de villanueva de la serena")
    assert r.intent == "oficinas" and r.entities["town"] == "Villanueva de la Serena" and r.entities["office_id"] == "OAC-VSE"
    r = router.route("el teléfono del servicio extremeño de salud")
    assert r.intent == "directorio" and r.entities["unit"] == "Servicio Extremeño de Salud"
    r = router.route("mi expediente es el dos cero dos seis cero cero cero uno dos tres")
    assert r.intent == "estado_expediente" and r.entities["reference"] == "2026000123"


def test_dtmf_and_hints(router: Router) -> None:
    assert router.dtmf("main", "0") == "hablar_agente"
    assert router.dtmf("main", "1") == "tasa_itv"
    assert router.dtmf("main", "#") is None
    assert router.dtmf("nope", "1") is None
    hints = router.hints()
    assert "itv" in hints and "mérida" in hints and "cero" in hints


def test_prefix_keywords_and_inhibitors() -> None:
    cfg = RoutingConfig.model_validate({
        "intents": [
            {"id": "reclamar", "keywords": {"reclam*": 0.9, "estado": -0.9}},
            {"id": "estado", "keywords": {"estado": 0.9}},
        ],
    })
    r = Router(cfg)
    assert r.route("reclamaciones varias").intent == "reclamar"
    assert r.route("estado de la reclamación").intent == "estado"


# ---- garbage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\x00\x01\x02", "🙂🙂🙂", "😡 quiero poner una queja 😡", "a" * 10_000, "pagar itv " * 2_000,
     "\ufffd\ufffe\U0010ffff", "ÑÑÑ ççç", "\u202eltr\u202c", "é\u0301\u0301\u0301", "٣٤٥ ١٢", "\udcff\udc80"],
)
def test_garbage_never_crashes(router: Router, text: str) -> None:
    result = router.route(text)
    assert isinstance(result, RouteResult)
    assert 0 <= result.confidence <= 1
    assert result.intent in (None, "queja_sugerencia", "tasa_itv")


def test_garbage_intents(router: Router) -> None:
    assert router.route("").intent is None
    assert router.route("🙂🙂🙂").intent is None
    assert router.route("\x00" * 5000).intent is None
    assert router.route("😡 quiero poner una queja 😡").intent == "queja_sugerencia"
    with pytest.raises(TypeError):
        router.route(b"bytes")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_any_text_routes(router: Router, text: str) -> None:
    result = router.route(text)
    assert 0 <= result.confidence <= 1
    assert extract_reference(text) is None or len(extract_reference(text) or "") >= 4
    parse_yes_no(text)


# ---- normalisation ------------------------------------------------------------------------------


def test_fold_keeps_ene_drops_accents_and_punctuation() -> None:
    assert fold("¿Cuánto cuesta la ITV? ¡Año 2026!") == "cuanto cuesta la itv año 2026"
    assert fold("Pingüino, CAMIÓN; e-mail") == "pinguino camion e mail"
    assert fold("🙂\x00\t") == ""


def test_normalize_fillers_spelling_numbers() -> None:
    assert normalize("Eh, pues mire, kiero pagar la ITV") == "quiero pagar la itv"
    assert normalize("hola buenos días") == ""
    assert normalize("nesesito el tlf de la ofisina") == "necesito el telefono de la ofisina"
    assert normalize("x favor q hora abren") == "que hora abren"
    assert normalize("no puedo entrar en mi espacio") == "no puedo entrar en miespacio"


def test_content_stems_and_synonyms() -> None:
    # pagar/pago/pagué and abonar all meet in one stem.
    stems = {analyze(w).content[0] for w in ("pagar", "pago", "pagué", "abonar", "abono")}
    assert stems == {"pag"}
    assert analyze("quiero la contraseña").content == ("clav",)


def test_phonetic_keys() -> None:
    assert phonetic("kiero") == phonetic("quiero")
    assert phonetic("ofisina") == phonetic("oficina")
    assert phonetic("caseres") == phonetic("caceres")
    assert phonetic("abonar") == phonetic("habonar")
    assert phonetic("vale") == phonetic("bale")
    assert phonetic("jente") == phonetic("gente")
    assert phonetic("año") != phonetic("ano")


def test_spelled_letters() -> None:
    assert "itb" in spelled_runs(("la", "y", "te", "b", "de", "mi", "moto"))
    assert spelled_runs(("i", "te", "ve")) == ["itv"]
    assert spelled_runs(("de", "la", "y", "de")) == []


# ---- numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "digits"),
    [
        ("dos mil veintiséis", "2026"),
        ("cuatro cinco uno dos", "4512"),
        ("veintitrés", "23"),
        ("cero", "0"),
        ("treinta y cinco", "35"),
        ("ciento treinta y cinco", "135"),
        ("doscientos uno", "201"),
        ("mil novecientos noventa y nueve", "1999"),
        ("un millón doscientos mil", "1200000"),
        ("dos cero dos seis cero cero cero uno dos tres", "2026000123"),
        ("veinte veintiséis", "2026"),
        ("cero cero siete", "007"),
        ("dieci seis", "16"),
        ("el 2026 cero cero uno", "el 2026001"),
        ("quiero una cita", "quiero una cita"),
        ("tengo dos hijos y tres nietos", "tengo 2 hijos y 3 nietos"),
    ],
)
def test_number_words(words: str, digits: str) -> None:
    assert words_to_digits(fold(words)) == digits


# ---- entities -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "town"),
    [
        ("la oficina de Mérida", "Mérida"),
        ("oficina de caseres", "Cáceres"),  # by ear
        ("en don benito", "Don Benito"),
        ("hay oficina en villanueva", "Villanueva de la Serena"),  # first word of a longer name
        ("jerez de los caballeros", "Jerez de los Caballeros"),
        ("la oficina de almendralejos", "Almendralejo"),  # typo, fuzzy
        ("quiero una oficina", None),
        ("", None),
    ],
)
def test_extract_town(kb: KnowledgeConfig, text: str, town: str | None) -> None:
    office = extract_town(text, kb.offices)
    assert (office.town if office else None) == town


@pytest.mark.parametrize(
    ("text", "dir3"),
    [
        ("el teléfono de la consejería de sanidad", "A11000010"),  # alias
        ("servicio extremeño de salud", "A11000011"),  # full name beats the alias "salud"
        ("el sexpe", "A11000007"),
        ("la secretaría general de hacienda", "A11000003"),
        ("la consegería de educasion", "A11000008"),  # by ear
        ("la delegación de agricultura en badajoz", "A11000014"),
        ("el servicio", None),  # a generic word alone names nothing
        ("la oficina de olivenza", None),
    ],
)
def test_extract_unit(kb: KnowledgeConfig, text: str, dir3: str | None) -> None:
    unit = extract_unit(text, kb.directory)
    assert (unit.dir3_code if unit else None) == dir3


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("dos cero dos seis cero cero cero uno dos tres", "2026000123"),
        ("mi expediente es el 2026000123, gracias", "2026000123"),
        ("EX-2026-789", "EX2026789"),
        ("e equis dos cero dos seis siete ocho nueve", "EX2026789"),
        ("a de alicante be de barcelona tres cuatro siete nueve", "AB3479"),
        ("la referencia es K7M4Q2", "K7M4Q2"),
        ("dos mil veintiséis cero cero cero cuatro cinco uno dos", "20260004512"),
        ("presenté la solicitud hace dos meses", None),
        ("quiero pagar la ITV", None),
        ("", None),
    ],
)
def test_extract_reference(text: str, ref: str | None) -> None:
    assert extract_reference(text) == ref


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("sí", True), ("Si, por favor", True), ("claro", True), ("vale", True), ("correcto", True),
        ("eso es", True), ("sí, eso", True), ("pues sí", True), ("claro que sí", True),
        ("no", False), ("No, gracias", False), ("para nada", False), ("claro que no", False),
        ("no es eso", False), ("negativo", False),
        ("no sé", None), ("quiero pagar la itv", None), ("", None), ("🙂", None),
    ],
)
def test_parse_yes_no(text: str, answer: bool | None) -> None:
    assert parse_yes_no(text) is answer
