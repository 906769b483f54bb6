"""Speech to text: one interface, two backends.

- vosk: streaming; one `vosk.Model` per process, one `KaldiRecognizer` per stream (recognizers are
  not thread-safe; the model is). Grammar mode (`SetGrammar`) for closed answers (sí/no, digits,
  menu options) is much faster and more accurate than free dictation.
- faster-whisper: utterance-level (after endpointing); int8 on CPU, language fixed to Spanish, the
  routing vocabulary given as `hotwords` to bias decoding. No partial results.

Engines are blocking; `speech.service.Speech` runs them in its thread pools.
"""

from __future__ import annotations

import json
import math
import re
import threading
import unicodedata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, Field
from rapidfuzz import fuzz, process

from atiende.errors import Unavailable
from speech.audio import RATE, resample, to_float


class Alternative(BaseModel):
    text: str
    confidence: float


class SttResult(BaseModel):
    text: str = ""
    confidence: float = 0.0
    alternatives: list[Alternative] = Field(default_factory=list)
    engine: str = ""
    raw_text: str | None = Field(None, description="what the engine heard before snapping to a grammar")
    audio_ms: int = 0
    truncated: bool = False


def normalize(text: str) -> str:
    """Lower case, no accents or punctuation: for comparing transcripts with grammars and references."""
    t = unicodedata.normalize("NFKD", text.lower())
    t = "".join(c for c in t if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w\s]", " ", t).split())


def snap_to_grammar(text: str, grammar: list[str], min_score: float = 60.0) -> SttResult:
    """The grammar phrases closest to free text (for engines without native grammars)."""
    choices = {g: normalize(g) for g in grammar if g and g != "[unk]"}
    hits = process.extract(normalize(text), choices, scorer=fuzz.WRatio, limit=3) if text.strip() else []
    alts = [Alternative(text=str(key), confidence=round(score / 100.0, 3)) for _, score, key in hits if score >= min_score]
    best = alts[0] if alts else None
    if best is None:
        return SttResult(alternatives=alts, raw_text=text)
    return SttResult(text=best.text, confidence=best.confidence, alternatives=alts, raw_text=text)


class SttStream(Protocol):
    def accept(self, pcm: bytes) -> str | None: ...  # 8 kHz 16-bit frames; returns a partial text if the engine has one
    def final(self) -> SttResult: ...


class SttEngine(Protocol):
    name: str
    streaming: bool

    def stream(self, hints: list[str] | None = None, grammar: list[str] | None = None) -> SttStream: ...
    def transcribe(self, audio: np.ndarray, rate: int, hints: list[str] | None = None,
                   grammar: list[str] | None = None) -> SttResult: ...


# ---- vosk ---------------------------------------------------------------------------------------


class VoskStream:
    def __init__(self, engine: VoskEngine, grammar: list[str] | None) -> None:
        import vosk

        self.engine = engine
        self.grammar = grammar
        self.rec = vosk.KaldiRecognizer(engine.model, RATE)
        if grammar:
            # "[unk]" lets out-of-grammar speech come out as unknown instead of forced onto a phrase.
            self.rec.SetGrammar(json.dumps([*grammar, "[unk]"], ensure_ascii=False))
        self.rec.SetWords(True)
        self._finals: list[dict[str, Any]] = []
        self._samples = 0

    def accept(self, pcm: bytes) -> str | None:
        self._samples += len(pcm) // 2
        if self.rec.AcceptWaveform(pcm):
            # vosk found its own end of utterance: keep that piece and go on.
            self._finals.append(json.loads(self.rec.Result()))
            return self.partial_text()
        return self.partial_text()

    def partial_text(self) -> str:
        done = " ".join(r.get("text", "") for r in self._finals).strip()
        part = json.loads(self.rec.PartialResult()).get("partial", "")
        return f"{done} {part}".strip()

    def final(self) -> SttResult:
        self._finals.append(json.loads(self.rec.FinalResult()))
        words = [w for r in self._finals for w in r.get("result", [])]
        text = " ".join(r.get("text", "") for r in self._finals).split()
        text_s = " ".join(t for t in text if t != "[unk]")
        conf = float(np.mean([w.get("conf", 0.0) for w in words])) if words else 0.0
        res = SttResult(text=text_s, confidence=round(conf, 3) if text_s else 0.0, engine=self.engine.name,
                        audio_ms=self._samples * 1000 // RATE)
        if text_s:
            res.alternatives = [Alternative(text=text_s, confidence=res.confidence)]
        return res


class VoskEngine:
    name = "vosk"
    streaming = True

    def __init__(self, model_path: str | Path) -> None:
        import vosk

        path = Path(model_path)
        if not (path / "am").is_dir() and not (path / "final.mdl").exists():
            raise Unavailable(f"not a vosk model directory: {path}")
        vosk.SetLogLevel(-1)
        self.path = path
        self.model = vosk.Model(str(path))
        # Grammar mode needs a dynamic graph (HCLr.fst + Gr.fst, the small models); big models have HCLG.fst only.
        self.supports_grammar = (path / "graph" / "HCLr.fst").exists()

    def stream(self, hints: list[str] | None = None, grammar: list[str] | None = None) -> VoskStream:
        return VoskStream(self, grammar if grammar and self.supports_grammar else None)

    def transcribe(self, audio: np.ndarray, rate: int, hints: list[str] | None = None,
                   grammar: list[str] | None = None) -> SttResult:
        from speech.audio import to_pcm16

        s = self.stream(hints, grammar)
        pcm = to_pcm16(resample(audio, rate, RATE))
        step = 8000  # 0.5 s per call: fewer Python round trips than 20 ms frames
        for i in range(0, len(pcm), step):
            s.accept(pcm[i:i + step])
        return s.final()


# ---- faster-whisper ------------------------------------------------------------------------------

# Phrases Whisper is known to invent on silence or noise (its training subtitles' credits).
_HALLUCINATIONS = (
    "subtitulos realizados por la comunidad de amara org",
    "subtitulos por la comunidad de amara org",
    "gracias por ver el video",
    "suscribete",
    "amara org",
)


class WhisperStream:
    """Buffers the utterance; decodes it at `final()` (Whisper is not a streaming model)."""

    def __init__(self, engine: WhisperEngine, hints: list[str] | None, grammar: list[str] | None) -> None:
        self.engine, self.hints, self.grammar = engine, hints, grammar
        self._buf = bytearray()

    def accept(self, pcm: bytes) -> str | None:
        self._buf += pcm
        return None

    def final(self) -> SttResult:
        return self.engine.transcribe(to_float(bytes(self._buf)), RATE, self.hints, self.grammar)


class WhisperEngine:
    name = "whisper"
    streaming = False

    def __init__(self, model_path: str | Path, *, cpu_threads: int = 2, workers: int = 1, beam_size: int = 5,
                 prompt: str = "", max_hint_chars: int = 300) -> None:
        from faster_whisper import WhisperModel

        path = Path(model_path)
        if not (path / "model.bin").is_file():
            raise Unavailable(f"not a faster-whisper model directory: {path} (run `atiende models prepare`)")
        self.path = path
        self.model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads,
                                  num_workers=workers, local_files_only=True)
        self.beam_size = beam_size
        self.prompt = prompt
        self.max_hint_chars = max_hint_chars
        self._lock = threading.Semaphore(workers)  # CTranslate2 runs `workers` decodes in parallel at most

    def stream(self, hints: list[str] | None = None, grammar: list[str] | None = None) -> WhisperStream:
        return WhisperStream(self, hints, grammar)

    def _hotwords(self, hints: list[str] | None, grammar: list[str] | None) -> str | None:
        """Grammar phrases first, then hints, within a character budget (Whisper's prompt is 224 tokens,
        and every token of it costs decoding time)."""
        hint_list = [h for h in dict.fromkeys(h.strip() for h in hints or []) if h]
        total = sum(len(h) + 2 for h in hint_list)
        if total > self.max_hint_chars:
            # Too many: an even sample, since hint lists come grouped (by intent) and every group matters.
            step = total / self.max_hint_chars
            hint_list = hint_list[:: max(1, round(step))]
        words = [*(grammar or []), *hint_list]
        out, size = [], 0
        for w in dict.fromkeys(w.strip() for w in words if w and w.strip() and w != "[unk]"):
            if size + len(w) + 2 > self.max_hint_chars:
                continue
            out.append(w)
            size += len(w) + 2
        return ", ".join(out) or None

    def transcribe(self, audio: np.ndarray, rate: int, hints: list[str] | None = None,
                   grammar: list[str] | None = None) -> SttResult:
        audio_ms = int(len(audio) * 1000 / rate) if rate else 0
        x = resample(audio, rate, 16000)
        if x.size < 1600 or float(np.sqrt(np.mean(x * x))) < 1e-3:
            # Under 0.1 s or digital silence: nothing to decode (and nothing for Whisper to invent).
            return SttResult(engine=self.name, audio_ms=audio_ms)
        with self._lock:
            segments, _info = self.model.transcribe(
                x, language="es", beam_size=self.beam_size, temperature=0.0, condition_on_previous_text=False,
                without_timestamps=True, initial_prompt=self.prompt or None, hotwords=self._hotwords(hints, grammar),
                vad_filter=False)
            segs = list(segments)
        kept = [s for s in segs if not (s.no_speech_prob > 0.6 and s.avg_logprob < -0.8)]
        text = " ".join(s.text.strip() for s in kept).strip()
        norm = normalize(text)
        if norm in _HALLUCINATIONS or any(h in norm for h in _HALLUCINATIONS[:2]):
            text, kept = "", []
        elif self.prompt and len(norm.split()) >= 6 and norm in normalize(self.prompt):
            text, kept = "", []  # the prompt echoed back: Whisper heard nothing it could tell apart
        if not text:
            return SttResult(engine=self.name, audio_ms=audio_ms)
        logprob = float(np.mean([s.avg_logprob for s in kept]))
        confidence = round(math.exp(logprob) * (1.0 - float(np.mean([s.no_speech_prob for s in kept]))), 3)
        if grammar:
            res = snap_to_grammar(text, grammar)
            res.confidence = round(res.confidence * confidence, 3) if res.text else 0.0
        else:
            res = SttResult(text=text, confidence=confidence, alternatives=[Alternative(text=text, confidence=confidence)])
        res.engine, res.audio_ms = self.name, audio_ms
        return res
