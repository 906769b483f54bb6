"""Agent-call recordings cut by a crash of the node that recorded them.

`ivr.conference.Recorder` writes `rec-….wav.part` beside the voicemails; a node killed mid-call leaves that file
with a header that says 0 frames, and the recording's record in the store says "recording" for ever. At
start-up, before any call, each part becomes a valid (shorter) WAV, is copied to the shared store like a
finished one, and its record says it is incomplete and recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from core.clock import Clock
from core.store import REDIS_ERRORS, Store
from ivr.conference import RECORDING_PREFIX, RecordingSink
from voicemail.recording import finalize_part, parts

log = logging.getLogger(__name__)


async def recover(data_dir: Path, store: Store, sink: RecordingSink | None, clock: Clock) -> list[str]:
    """Finish the agent-call recordings a crash cut; their ids. With the store away at start-up the WAV is kept
    on this node's disk all the same and the error logged (its record keeps saying "recording")."""
    cut = [p for p in await asyncio.to_thread(parts, data_dir) if p.name.startswith(RECORDING_PREFIX)]
    done: list[str] = []
    r, k = store.redis, store.keys
    for part in cut:
        try:
            rec = await asyncio.to_thread(finalize_part, part)
        except OSError as exc:
            log.error("agent-call recording %s could not be recovered: %s", part.name, exc)
            continue
        raw: Any = None
        with contextlib.suppress(*REDIS_ERRORS):
            raw = await r.get(k.call_recording(rec.call_id))
        meta: dict[str, Any] = {}
        if raw:
            with contextlib.suppress(ValueError):
                loaded = json.loads(raw)
                meta = loaded if isinstance(loaded, dict) else {}
        meta.update({"id": rec.call_id, "state": "done", "incomplete": True, "recovered": True,
                     "ended_at": meta.get("ended_at") or clock.now().isoformat(),
                     "duration_s": round(rec.duration_s, 2), "sha256": rec.sha256})
        if sink is not None:
            try:
                await sink.put(rec.call_id, Path(rec.path))
            except Exception as exc:  # the WAV stays on this node's disk, served here
                log.warning("recovered recording %s not copied to the shared store: %s", rec.call_id, exc)
                meta["shared"] = False
        try:
            await r.set(k.call_recording(rec.call_id), json.dumps(meta, ensure_ascii=False, separators=(",", ":")))
        except REDIS_ERRORS as exc:
            log.error("recovered recording %s: its record could not be written: %s", rec.call_id, exc)
        log.warning("recovered an agent-call recording cut by a restart",
                    extra={"fields": {"recording": rec.call_id, "call_id": meta.get("call_id")}})
        done.append(rec.call_id)
    return done
