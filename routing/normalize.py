"""Spanish text normalisation shared by the router and the entity extractors.

The same pipeline runs on what callers say or type and on the configured phrases and
keywords, so both sides meet in one form:

1. `fold`: lowercase, accents off (ñ kept: "año" is not "ano"), anything that is not a letter
   or digit becomes a space (punctuation, emoji, control characters, other scripts).
2. spelling: SMS abbreviations and frequent misspellings ("kiero", "xq", "tlf").
3. numbers: number words to digits (`routing.numbers`).
4. phrases: multi-word fixes ("mi espacio" -> "miespacio", "por favor" -> filler).
5. fillers ("eh", "pues", "mire", greetings) are dropped; what remains is `tokens`.
6. `content`: tokens without stopwords, synonyms folded to one word, Snowball-stemmed
   (pagar/pago/pagué -> "pag"), the form compared against phrases.

`phonetic` gives a Spanish sound key (v=b, z=ce=s, qu=k, silent h, ll=y), so "ofisina",
"kiero" or "abonar"/"habonar" written by ear meet their dictionary forms.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer
from rapidfuzz import process
from rapidfuzz.distance import OSA

from routing.numbers import digits_in

# Longer input is cut: nobody asks for a service in more than this, and it bounds the work.
MAX_CHARS = 2000
MAX_TOKENS = 200

_NON_WORD = re.compile(r"[^a-z0-9ñ]+")

# Single-word fixes: SMS spellings, typos and by-ear spellings common in Spanish chat and STT.
SPELLING: dict[str, str] = {
    "k": "que", "q": "que", "ke": "que", "qe": "que", "xq": "porque", "pq": "porque", "porq": "porque",
    "x": "por", "xa": "para", "pa": "para", "tb": "tambien", "tmb": "tambien", "tambn": "tambien",
    "kiero": "quiero", "qiero": "quiero", "kero": "quiero", "quero": "quiero", "kiere": "quiere",
    "keria": "queria", "kisiera": "quisiera", "nesesito": "necesito", "nesecito": "necesito",
    "nececito": "necesito", "necesto": "necesito", "nesito": "necesito", "nesesita": "necesita",
    "ola": "hola", "aser": "hacer", "acer": "hacer", "ablar": "hablar", "avlar": "hablar", "abla": "habla",
    "orario": "horario", "asta": "hasta", "ay": "hay", "bale": "vale",
    "grasias": "gracias", "porfa": "porfavor", "xfa": "porfavor", "xfavor": "porfavor", "pls": "porfavor",
    "tlf": "telefono", "tlfn": "telefono", "tlfno": "telefono", "tfno": "telefono", "telf": "telefono",
    "tel": "telefono", "telefo": "telefono", "tfn": "telefono", "exp": "expediente", "expte": "expediente",
    "ref": "referencia", "info": "informacion", "dnd": "donde", "dnde": "donde", "d": "de",
    "toy": "estoy", "toi": "estoy", "kon": "con", "cn": "con", "xk": "porque", "wapp": "whatsapp",
    "oki": "ok", "okey": "ok", "okay": "ok", "vle": "vale", "dew": "adios",
    "sita": "cita", "sitas": "citas", "ofi": "oficina",
}

# Multi-word fixes, applied on the folded text (word boundaries). Order matters: longer first.
PHRASES: tuple[tuple[str, str], ...] = (
    ("buenos dias", ""), ("buenas tardes", ""), ("buenas noches", ""), ("muy buenas", ""),
    ("por favor", ""), ("hasta luego", ""), ("a ver", ""), ("o sea", ""), ("es que", ""), ("que tal", ""),
    ("mi espacio", "miespacio"), ("mis espacio", "miespacio"), ("mi espasio", "miespacio"),
    ("mi area personal", "miespacio"), ("area personal", "miespacio"), ("area personalizada", "miespacio"),
    ("e mail", "correo"), ("correo electronico", "correo"), ("i griega", "y"), ("uve doble", "w"),
    ("doble uve", "w"), ("uve", "v"), ("de carne y hueso", "persona"), ("ser humano", "persona"),
    # "Señorita" is a courtesy filler ("señorita, quería...") except as who to talk to.
    ("con una señorita", "con una persona"), ("con un señor", "con una persona"), ("con una señora", "con una persona"),
    ("con una senorita", "con una persona"), ("con un senor", "con una persona"), ("con una senora", "con una persona"),
    ("hoja de reclamaciones", "reclamacion"), ("libro de reclamaciones", "reclamacion"),
)

# Words that carry no meaning for routing: hesitations, greetings, courtesy.
FILLERS: frozenset[str] = frozenset(
    "eh ehh ehhh ehm em emm mm mmm hmm ah ahh oh uh um pues mire mira oiga oye buenas buenos hola holi "
    "bueno porfavor gracias perdone perdon disculpe disculpa senorita senor senora caballero vale ok "
    "venga nada bien hey alo diga digame muchas adios chao vaya".split()
)

# Function words and request verbs that appear in every intent: left out of phrase comparison.
STOPWORDS: frozenset[str] = frozenset(
    "de la el los las lo un una unos unas y o u a e en con por para que del al se me te le les nos mi mis "
    "tu tus su sus es son era fue ser estar esta este esto estos estas ese esa eso como cual cuales "
    "quiero quiere queria quisiera quisieramos necesito necesita necesitaria queremos deseo desearia "
    "gustaria me puede podria pueden podrian puedo puedes sabe saber decir diga dar darme "
    "dime favor hay tengo tiene tienen yo usted ustedes ya si no muy mas pero sobre tambien algo alguna "
    "alguno algun le ha he han hemos habia hace hacer otra otro cosa".split()
)

# Language-level synonyms (folded word -> canonical folded word), on both sides of a comparison.
SYNONYMS: dict[str, str] = {
    "abonar": "pagar", "abono": "pago", "abone": "pague", "abonarla": "pagarla", "satisfacer": "pagar",
    "liquidar": "pagar", "ingresar": "pagar", "importe": "precio", "coste": "precio", "costo": "precio",
    "cuesta": "precio", "tarifa": "precio", "automovil": "coche", "carro": "coche", "auto": "coche",
    "mail": "correo", "email": "correo", "emilio": "correo",
    "reclamaciones": "reclamacion", "queja": "queja", "quejas": "queja", "sugerencias": "sugerencia",
    "funcionaria": "funcionario", "operadora": "operador", "teleoperador": "operador",
    "teleoperadora": "operador", "humana": "humano", "personas": "persona", "contrasena": "clave", "contraseña": "clave",
    "password": "clave", "contrasenya": "clave", "pin": "clave",
}

_STEMMER = snowballstemmer.stemmer("spanish")
# Where Snowball merges words that mean different things for routing ("saber"/"sábados" -> "sab").
STEM_EXCEPTIONS: dict[str, str] = {
    "sabado": "sabado", "sabados": "sabado", "numerosa": "numeros", "numerosas": "numeros", "mesa": "mesa",
    "mesas": "mesa", "contestador": "contestador", "partido": "partido", "partidos": "partido",
    "cita": "cit", "citas": "cit", "citar": "citar", "pizza": "pizza", "pizzas": "pizza", "cine": "cine", "cines": "cine",
    "comida": "comida", "comidas": "comida", "comer": "comer", "paro": "paro", "parado": "parado", "parada": "parada",
    "varias": "varios", "varios": "varios", "variar": "varios", "operacion": "operacion", "operar": "operacion",
    "opera": "operacion", "operativo": "operativo", "trata": "trata", "tratar": "trata", "tratado": "trata",
    "plaza": "plaza", "plazas": "plaza", "creo": "creer", "creer": "creer",
}


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    if word.isdigit():
        return word
    if word in STEM_EXCEPTIONS:
        return STEM_EXCEPTIONS[word]
    # Snowball drops attached pronouns (llamarme -> llam) but not "os" (llamaros, atenderos).
    if len(word) > 6 and word.endswith(("aros", "eros", "iros")):
        word = word[:-2]
    return str(_STEMMER.stemWord(word))


def strip_accents(text: str) -> str:
    out: list[str] = []
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.combining(ch):
            # The tilde of ñ survives; every other mark goes.
            if ch == "\u0303" and out and out[-1] in "nN":
                out[-1] = "ñ" if out[-1] == "n" else "Ñ"
            continue
        out.append(ch)
    return "".join(out)


def fold(text: str) -> str:
    """Lowercase, accents off (ñ kept), every non-alphanumeric run to one space."""
    if not text:
        return ""
    text = text[:MAX_CHARS]
    if text.isascii():
        low = text.lower()
    else:
        low = strip_accents(unicodedata.normalize("NFKC", text).lower())
    return _NON_WORD.sub(" ", low).strip()


_PHRASE_RE = [(a, re.compile(rf"\b{re.escape(a)}\b"), b) for a, b in PHRASES]


def _apply_phrases(text: str) -> str:
    for plain, pattern, repl in _PHRASE_RE:
        if plain in text:  # cheap test first: most phrases are absent
            text = pattern.sub(repl, text)
    return text


@lru_cache(maxsize=65536)
def phonetic(word: str) -> str:
    """Spanish sound key of a folded word: written-by-ear variants share it ("kiero"/"quiero")."""
    w = word
    if w.isdigit():
        return w
    w = w.replace("ch", "C").replace("ll", "y").replace("qu", "k").replace("gue", "ge").replace("gui", "gi")
    w = re.sub(r"c(?=[ei])", "s", w)
    w = re.sub(r"g(?=[ei])", "j", w)
    w = w.replace("c", "k").replace("z", "s").replace("v", "b").replace("w", "b").replace("h", "").replace("x", "ks")
    w = w.replace("rr", "r")
    if w.endswith("y"):
        w = w[:-1] + "i"
    w = re.sub(r"(.)\1+", r"\1", w)
    return w


def canonical(word: str) -> str:
    return SYNONYMS.get(word, word)


@dataclass(frozen=True, slots=True)
class Normalized:
    """One utterance after normalisation."""

    text: str  # tokens joined: "quiero pagar la tasa de la itv"
    tokens: tuple[str, ...]  # folded, fixed, numbers as digits, fillers out
    content: tuple[str, ...]  # stems of the meaningful tokens, synonyms folded in
    spelled: tuple[str, ...] = ()  # letters read one by one, joined ("i te ve" -> "itv"): see spelled_runs


def _spell(tokens: list[str]) -> list[str]:
    return [SPELLING.get(t, t) for t in tokens]


Rewrite = tuple[str, "re.Pattern[str]", str]


def rewrites(pairs: dict[str, str]) -> tuple[Rewrite, ...]:
    """Compile configured rewrites ("ite ve" -> "itv"), folded like the text they apply to."""
    out = []
    for a, b in pairs.items():
        fa, fb = fold(a), fold(b)
        if fa:
            out.append((fa, re.compile(rf"\b{re.escape(fa)}\b"), fb))
    return tuple(sorted(out, key=lambda r: -len(r[0])))  # longer first


def analyze(text: str, extra_phrases: tuple[Rewrite, ...] = ()) -> Normalized:
    """Normalise an utterance (see the module doc). Never raises on any `str`."""
    folded = fold(text)
    if not folded:
        return Normalized("", (), ())
    tokens = _spell(folded.split()[: MAX_TOKENS * 2])
    tokens = digits_in(tokens)
    joined = " ".join(tokens)
    joined = _apply_phrases(joined)
    for plain, pattern, repl in extra_phrases:
        if plain in joined:
            joined = pattern.sub(repl, joined)
    kept = [t for t in joined.split() if t not in FILLERS][:MAX_TOKENS]
    content = tuple(stem(canonical(t)) for t in kept if t not in STOPWORDS)
    return Normalized(" ".join(kept), tuple(kept), content, tuple(spelled_runs(kept)))


def normalize(text: str) -> str:
    """The normalised text of an utterance: 'Eh, kiero pagar la ITV, ¡dos mil veintiséis!' -> 'quiero pagar la itv 2026'."""
    return analyze(text).text


# Spoken letter names (folded), for acronyms and references read letter by letter.
LETTER_NAMES: dict[str, str] = {
    "a": "a", "be": "b", "ce": "c", "de": "d", "e": "e", "efe": "f", "ge": "g", "hache": "h", "i": "i",
    "jota": "j", "ka": "k", "ele": "l", "eme": "m", "ene": "n", "eñe": "ñ", "o": "o", "pe": "p", "cu": "q",
    "erre": "r", "ere": "r", "ese": "s", "te": "t", "u": "u", "ve": "v", "v": "v", "w": "w", "equis": "x",
    "ye": "y", "y": "i", "zeta": "z", "zeda": "z", "be alta": "b", "ve baja": "v",
}
# Letters that are also everyday words: part of a spelled run, never enough to make one.
_WEAK_LETTERS = frozenset("a e o y u de te se ce".split())


def _letter(token: str) -> str | None:
    if token in LETTER_NAMES:
        return LETTER_NAMES[token]
    if len(token) == 1 and token.isalpha():
        return token
    return None


def spelled_runs(tokens: tuple[str, ...] | list[str]) -> list[str]:
    """Letters read one by one, joined: ('la', 'y', 'te', 'b', 'de') -> ['itbd', 'tbd', 'itb', 'tb'].

    For acronyms ("ITV", "SES"). Each maximal run of two or more letter tokens with at least one
    unambiguous letter gives its joined letters, also without leading/trailing weak words
    ("y", "a", "de"...) that may be plain words rather than letters.
    """
    out: list[str] = []
    run: list[str] = []
    strong = False

    def flush() -> None:
        if len(run) < 2 or not strong:
            return
        letters = [LETTER_NAMES.get(t) or t for t in run]
        lo = 1 if run[0] in _WEAK_LETTERS else 0
        hi = len(run) - 1 if run[-1] in _WEAK_LETTERS else len(run)
        for a, b in ((0, len(run)), (lo, len(run)), (0, hi), (lo, hi)):
            joined = "".join(letters[a:b])
            if b - a >= 2 and joined not in out:
                out.append(joined)

    for tok in tokens:
        if _letter(tok) is not None:
            run.append(tok)
            strong = strong or tok not in _WEAK_LETTERS
        else:
            flush()
            run, strong = [], False
    flush()
    return out


@lru_cache(maxsize=1)
def lexicon() -> frozenset[str]:
    """Folded Spanish words (pyspellchecker's frequency list, ~86k): real words are not typos.

    Without it "queda" would be read as a slip for "queja" and "noche" for "coche".
    """
    try:
        from spellchecker import SpellChecker
    except ImportError:  # pragma: no cover - the dependency is declared; degrade to no guard
        return frozenset()
    words = SpellChecker(language="es", distance=1).word_frequency.dictionary
    return frozenset(fold(w) for w in words)


def max_typos(n: int) -> int:
    """Edits forgiven in a word of n letters: none below 5 (short words collide: pasa/tasa), 1 up to 8, then 2."""
    return 0 if n < 5 else 1 if n < 9 else 2


def typo_matches(word: str, choices: list[str], limit: int = 3) -> list[str]:
    """Known words within `max_typos` edits (transpositions count one) of `word`.

    The first letter must agree for words under 7 letters: typing slips rarely hit it, and it
    keeps "noche" away from "coche".
    """
    edits = max_typos(len(word))
    if not edits or word.isdigit() or word in lexicon():
        return []
    hits = process.extract(word, choices, scorer=OSA.distance, score_cutoff=edits, limit=limit)
    return [c for c, _d, _i in hits if c[0] == word[0] or len(word) >= 7]
