"""Speech-to-text and text-to-speech engines, endpointing and thread pools."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.base import Strict


class SpeechConfig(Strict):
    stt_engine: Literal["auto", "vosk", "whisper"] = Field(
        "auto", description="auto: vosk if a Spanish vosk model is configured or fetched, else faster-whisper")
    tts_engine: Literal["auto", "piper", "espeak"] = Field(
        "auto", description="auto: piper if a Spanish piper voice is configured or fetched, else espeak-ng")
    vosk_model: str | None = Field(None, description="directory of a Spanish vosk model (default: the fetched one)")
    whisper_model: str | None = Field(None, description="faster-whisper model directory (default: the prepared whisper-base)")
    whisper_beam_size: int = Field(5, ge=1, le=10)
    whisper_prompt: str = Field("", description="initial prompt for Whisper (domain words)")
    whisper_hotwords: bool = Field(False, description="also give the routing vocabulary as Whisper hotwords (measured "
                                                      "worse with the domain prompt; see speech.stt.WhisperEngine)")
    whisper_alternatives: int = Field(3, ge=1, le=10, description="n-best transcripts kept as alternatives")
    piper_voice: str | None = Field(None, description="piper .onnx voice (its .onnx.json next to it); default: the fetched one")
    piper_espeak_voice: str | None = Field(None, description="override the voice's phonemiser language, e.g. 'es'")
    piper_length_scale: float | None = Field(None, gt=0.3, lt=3.0, description="speaking rate: > 1 slower")
    espeak_voice: str = "es"
    espeak_speed: int = Field(160, ge=80, le=450, description="words per minute")
    espeak_pitch: int = Field(50, ge=0, le=99)
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    end_silence_ms: int = Field(600, ge=100, le=5000)
    no_input_timeout_ms: int = Field(5000, ge=500)
    max_utterance_ms: int = Field(15000, ge=1000)
    barge_in_ms: int = Field(200, ge=40, le=5000, description="caller speech that interrupts a prompt; per prompt: "
                                                             "the flows' barge_in_ms (600 lets a welcome play on "
                                                             "over a cough or a '¿hola?')")
    max_transcribe_ms: int = Field(600_000, ge=1000, description="longer recordings are cut (and flagged truncated)")
    stt_threads: int = Field(2, ge=1, description="decoder threads per utterance (CTranslate2 / onnxruntime)")
    stt_workers: int = Field(2, ge=1, description="utterances decoded in parallel")
    tts_threads: int = Field(2, ge=1, description="texts rendered in parallel (espeak-ng runs as a subprocess)")
    prompt_cache: bool = True
    prompt_cache_mb: int = Field(64, ge=1, description="synthesised audio kept in memory (each process)")
    processes: bool = Field(True, description="engines in worker processes (off: threads of the service process, "
                                              "where their CPU and GIL delay every call's audio)")
    worker_nice: int = Field(10, ge=0, le=19, description="CPU priority the speech workers lower themselves by: "
                                                          "the media loop wins when the box is short of CPU")
    early_commit_ms: int = Field(0, ge=0, le=2000, description="decode on a pause this long and answer at once if "
                                                               "the router takes the transcript (0, the default: "
                                                               "always wait end_silence_ms). Off because a caller "
                                                               "who pauses halfway is answered on the first half: "
                                                               "at 250 ms, 4 answers of the audio test set with a "
                                                               "400 ms pause went wrong and 1 went right "
                                                               "(bench/bench_speech.py --early-commit 250 "
                                                               "--hesitate 400)")
    early_commit_min_speech_ms: int = Field(400, ge=0, description="no early decode of shorter speech")
    max_recognition_wait_ms: int = Field(2500, ge=100, description="admission: when a new utterance would wait longer "
                                                                   "for its transcript, questions offer the keypad")
