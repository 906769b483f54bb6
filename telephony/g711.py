"""G.711 A-law and µ-law to and from 16-bit little-endian PCM, one 20 ms frame at a time.

`audioop` is C and takes microseconds per frame, so it is fine on the event loop. It is
deprecated in 3.11-3.12 (removed in 3.13, where the `audioop-lts` package provides it).
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME_MS = 20
RATE = 8000
SAMPLES = RATE * FRAME_MS // 1000  # 160 samples per frame
PCM_FRAME = SAMPLES * 2  # 320 bytes of 16-bit PCM
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}
SILENCE_PCM = b"\x00" * PCM_FRAME


def encode(codec: str, pcm: bytes) -> bytes:
    if codec == "PCMA":
        return audioop.lin2alaw(pcm, 2)
    if codec == "PCMU":
        return audioop.lin2ulaw(pcm, 2)
    raise ValueError(f"unsupported codec {codec}")


def decode(codec: str, data: bytes) -> bytes:
    if codec == "PCMA":
        return audioop.alaw2lin(data, 2)
    if codec == "PCMU":
        return audioop.ulaw2lin(data, 2)
    raise ValueError(f"unsupported codec {codec}")


def fit_frame(pcm: bytes) -> bytes:
    """Pad or cut to exactly one 20 ms frame (the last frame of a prompt is often short)."""
    if len(pcm) == PCM_FRAME:
        return pcm
    return (pcm + SILENCE_PCM)[:PCM_FRAME] if len(pcm) < PCM_FRAME else pcm[:PCM_FRAME]
