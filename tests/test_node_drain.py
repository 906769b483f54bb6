"""An operator drains a node: SIGUSR1 stops new work (readiness 503 "draining"), SIGUSR2 resumes, SIGTERM
drains and stops. The real `atiende run` process with its private Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent


def _health(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _until(port: int, want: int, within: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + within
    last: tuple[int, dict[str, object]] | None = None
    while time.monotonic() < deadline:
        try:
            last = _health(port)
            if last[0] == want:
                return last[1]
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/healthz never answered {want}: last {last}")


def test_sigusr1_drains_sigusr2_resumes_sigterm_stops(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ATIENDE_SERVICE__DATA_DIR": str(tmp_path / "var")}
    env.pop("ATIENDE_REDIS_URL", None)
    log = tmp_path / "atiende.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "atiende.cli", "run", "--no-sip", "--http", f"127.0.0.1:{port}"],
                                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert _until(port, 200)["ready"] is True
        proc.send_signal(signal.SIGUSR1)
        body = _until(port, 503)
        assert body["status"] == "draining" and body["reasons"] == ["draining"]
        proc.send_signal(signal.SIGUSR2)
        assert _until(port, 200)["draining"] is False
        proc.send_signal(signal.SIGTERM)  # no calls in progress: it stops without waiting the drain timeout
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "node draining" in text and "node takes new calls again" in text, text[-3000:]
