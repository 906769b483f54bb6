"""Attachments that citizens send on any channel: checked (size, content type), kept on disk like recordings,
and voice notes transcribed with the calls' speech engine.

Files live under `data_dir/attachments/<yyyy>/<mm>/<sha256><ext>` (content-addressed: a provider's retry or
the same photo sent twice is stored once); the interaction keeps name, content type, size, sha256 and the path
relative to the data dir, so the ticket in Redis says what was received and where it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from desk_api.channels.base import channels_config
from desk_api.context import Services

log = logging.getLogger(__name__)

MediaKind = Literal["image", "document", "audio", "voice", "video", "sticker"]
_EXT = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "application/pdf": ".pdf", "audio/ogg": ".ogg",
        "audio/mpeg": ".mp3", "audio/mp4": ".m4a", "audio/aac": ".aac", "audio/amr": ".amr", "video/mp4": ".mp4",
        "text/plain": ".txt", "application/msword": ".doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
        "application/vnd.oasis.opendocument.text": ".odt"}
# What a file's first bytes must look like for the types whose content we can recognise: a declared type that
# the bytes contradict (an executable called foto.jpg) is refused.
_MAGIC: dict[str, tuple[bytes, ...]] = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",),
                                        "application/pdf": (b"%PDF-",), "audio/ogg": (b"OggS",)}
_NAME_RE = re.compile(r"[^\w.\- ]+")


class MediaRef(BaseModel):
    """One file a message carries: a provider's handle to fetch it, or (e-mail) its bytes."""

    kind: MediaKind
    provider_id: str | None = None
    filename: str | None = None
    content_type: str | None = None
    size: int | None = None
    content: bytes | None = Field(None, exclude=True, repr=False)


class Refused(Exception):
    """The file is not kept (too large, type not allowed, content not what it claims)."""


def base_type(content_type: str | None) -> str:
    return (content_type or "application/octet-stream").split(";")[0].strip().lower()


def check(rt: Services, content_type: str | None, size: int | None) -> None:
    cfg = channels_config(rt)
    if size is not None and size > cfg.attachment_max_bytes:
        raise Refused(f"demasiado grande ({size} bytes; máximo {cfg.attachment_max_bytes})")
    if base_type(content_type) not in cfg.attachment_types:
        raise Refused(f"tipo de archivo no admitido ({base_type(content_type)})")


def _write(root: Path, rel: Path, content: bytes) -> None:
    path = root / rel
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def store(rt: Services, media: MediaRef, content: bytes, content_type: str | None) -> dict[str, Any]:
    """Keep one file; returns what the interaction records about it. Raises Refused."""
    ctype = base_type(content_type or media.content_type)
    check(rt, ctype, len(content))
    magic = _MAGIC.get(ctype)
    if magic and not content.startswith(magic):
        raise Refused(f"el contenido no es {ctype}")
    digest = hashlib.sha256(content).hexdigest()
    now = rt.clock.now()
    rel = Path("attachments") / f"{now:%Y}" / f"{now:%m}" / f"{digest}{_EXT.get(ctype, '.bin')}"
    await asyncio.to_thread(_write, Path(rt.data_dir), rel, content)
    name = _NAME_RE.sub("_", media.filename or "")[:120] or f"{media.kind}{_EXT.get(ctype, '')}"
    return {"kind": media.kind, "name": name, "content_type": ctype, "size": len(content), "sha256": digest,
            "path": str(rel)}


def refused(media: MediaRef, reason: str) -> dict[str, Any]:
    """What the interaction says about a file that was not kept: the agent knows something was sent."""
    name = _NAME_RE.sub("_", media.filename or "")[:120] or media.kind
    return {"kind": media.kind, "name": name, "content_type": base_type(media.content_type), "size": media.size,
            "refused": reason}


def _decode_8k(content: bytes, max_s: float) -> bytes:
    """Any audio container PyAV reads (OGG/Opus voice notes, AAC, AMR, MP3) as 8 kHz 16-bit mono PCM."""
    import io

    import av

    out = bytearray()
    limit = int(max_s * 8000) * 2
    with av.open(io.BytesIO(content), mode="r") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        for frame in container.decode(audio=0):
            for chunk in resampler.resample(frame):
                out += bytes(chunk.planes[0])[: chunk.samples * 2]
            if len(out) >= limit:
                break
        for chunk in resampler.resample(None):
            out += bytes(chunk.planes[0])[: chunk.samples * 2]
    return bytes(out[:limit])


async def transcribe(rt: Services, content: bytes) -> str | None:
    """A voice note's words, or None when it cannot be decoded or understood (the file is kept either way)."""
    cfg = channels_config(rt)
    if not cfg.transcribe_voice:
        return None
    try:
        pcm = await asyncio.to_thread(_decode_8k, content, cfg.max_voice_s)
    except Exception as exc:  # a broken or unknown container: the agent still has the file
        log.warning("voice note not decodable: %s", type(exc).__name__)
        return None
    if len(pcm) < 1600:  # under 0.1 s
        return None
    try:
        result = await rt.speech.transcribe(pcm)
    except Exception:  # the speech engine is another area's: a failure there must not lose the message
        log.exception("voice note transcription failed")
        return None
    text = result.text.strip()
    return text or None
