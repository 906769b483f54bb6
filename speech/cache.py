"""Prompt cache: fixed prompts rendered once per engine, voice and text, kept as 8 kHz WAV files.

The file name is a hash of everything that changes the audio (engine, voice, its settings, text), so
a config change (other voice, other speed, edited prompt) simply misses and renders anew; `sync`
then deletes the files no current prompt uses. Files are written atomically (write + rename), so
several processes can share the directory.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from core.audio import RATE
from speech.audio import AudioError, read_wav, split_frames, to_pcm16, write_wav


def prompt_key(engine_id: str, text: str) -> str:
    return hashlib.sha256(f"{engine_id}\x00{' '.join(text.split())}".encode()).hexdigest()[:32]


class PromptCache:
    def __init__(self, directory: Path, engine_id: str, max_in_memory: int = 256, max_bytes: int = 64 << 20) -> None:
        self.dir = Path(directory)
        self.engine_id = engine_id
        self._mem: OrderedDict[str, list[bytes]] = OrderedDict()
        self._max = max_in_memory
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _remember(self, key: str, frames: list[bytes]) -> None:
        """Under the lock: keep the newest texts within the entry count and the byte budget."""
        old = self._mem.pop(key, None)
        if old is not None:
            self._bytes -= sum(len(f) for f in old)
        self._mem[key] = frames
        self._bytes += sum(len(f) for f in frames)
        while self._mem and (len(self._mem) > self._max or self._bytes > self._max_bytes):
            _, gone = self._mem.popitem(last=False)
            self._bytes -= sum(len(f) for f in gone)

    def peek(self, text: str) -> list[bytes] | None:
        """The frames if this text is in memory (no disk access, no rendering: safe on the event loop)."""
        key = prompt_key(self.engine_id, text)
        with self._lock:
            frames = self._mem.get(key)
            if frames is not None:
                self._mem.move_to_end(key)
                self.hits += 1
            return frames

    def put(self, text: str, frames: list[bytes]) -> None:
        """Keep frames rendered elsewhere (a streamed synthesis): in memory and as a file. Blocking (the file)."""
        key = prompt_key(self.engine_id, text)
        with self._lock:
            self._remember(key, frames)
        write_wav(self.dir / f"{key}.wav", b"".join(frames), RATE)

    def path(self, text: str) -> Path:
        return self.dir / f"{prompt_key(self.engine_id, text)}.wav"

    def get(self, text: str, render: Callable[[str], bytes]) -> list[bytes]:
        """20 ms frames of the prompt; `render(text)` (8 kHz 16-bit PCM) runs only on a miss. Blocking."""
        key = prompt_key(self.engine_id, text)
        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                self.hits += 1
                return self._mem[key]
        p = self.dir / f"{key}.wav"
        frames: list[bytes] | None = None
        if p.is_file():
            try:
                audio, rate = read_wav(p)
                if rate == RATE:
                    frames = split_frames(to_pcm16(audio))
                    self.hits += 1
            except AudioError:
                frames = None  # a damaged file is rendered again
        if frames is None:
            self.misses += 1
            pcm = render(text)
            write_wav(p, pcm, RATE)
            frames = split_frames(pcm)
        with self._lock:
            self._remember(key, frames)
        return frames

    def sync(self, texts: Iterable[str], render: Callable[[str], bytes]) -> dict[str, int]:
        """Render every prompt that is missing and delete files no prompt of this engine uses."""
        wanted = {prompt_key(self.engine_id, t): t for t in texts if t.strip()}
        rendered = 0
        for key, text in wanted.items():
            if not (self.dir / f"{key}.wav").is_file():
                self.get(text, render)
                rendered += 1
        removed = 0
        if self.dir.is_dir():
            for f in self.dir.glob("*.wav"):
                if f.stem not in wanted:
                    f.unlink(missing_ok=True)
                    removed += 1
        with self._lock:
            for k in [k for k in self._mem if k not in wanted]:
                self._bytes -= sum(len(f) for f in self._mem.pop(k))
        return {"prompts": len(wanted), "rendered": rendered, "removed": removed}
