"""API fuzzing: schemathesis against /openapi.json of a real uvicorn, bounded examples, zero 5xx.

In the suite: the desk's operations, fuzzing phase, 5 examples each (~15 s on an idle 2-core machine).
The full run (every operation of the whole API, all phases, 50 examples each) is one command:

    .venv/bin/python tests/test_desk_fuzz.py [EXAMPLES]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from core.redis_server import PrivateRedis, free_port

REPO = Path(__file__).resolve().parent.parent
FUZZ_KEY = "fuzz-admin-key-0123456789"
DESK_PATHS = r"^/api/v1/(tickets|status|citizens|agents|queues|reports|audit|auth|users|api-keys)"


def serve(redis_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ATIENDE_REDIS_URL": redis_url, "ATIENDE_REDIS__PREFIX": f"fz{uuid.uuid4().hex[:8]}",
           "ATIENDE_DESK__DEMO": "true", "ATIENDE_DESK__USERS": "[]",
           "ATIENDE_DESK__API_KEYS": f"[{{name: fuzz, key: {FUZZ_KEY}, roles: [admin]}}]",
           "ATIENDE_DESK__RATE_LIMITS": "{status: {requests: 1000000, per_seconds: 60}, "
                                        "login: {requests: 1000000, per_seconds: 60}}"}
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "tests.desk_asgi:app", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning"], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"uvicorn did not start: {log.read_text()[-2000:]}")


def schemathesis_cmd(port: int, examples: int, phases: str, paths: str | None) -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    cmd = [str(exe), "run", f"http://127.0.0.1:{port}/openapi.json", "-H", f"X-API-Key: {FUZZ_KEY}", "-n", str(examples),
           "-c", "not_a_server_error", "--phases", phases, "--seed", "7", "--no-color", "--generation-database", "none"]
    return cmd + (["--include-path-regex", paths] if paths else [])


def test_fuzz_desk_api_no_server_errors(redis_server: PrivateRedis, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    proc = serve(redis_server.url, port, log)
    try:
        out = subprocess.run(schemathesis_cmd(port, 5, "fuzzing", DESK_PATHS), capture_output=True, text=True,
                             timeout=240, cwd=tmp_path)
    finally:
        proc.terminate()
        proc.wait(20)
    report = out.stdout[-4000:]
    assert out.returncode == 0, report
    assert "passed" in report and "Server error" not in report, report
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


if __name__ == "__main__":
    # The full run: every operation of the API, all phases, more examples. Needs redis-server.
    import tempfile

    srv = PrivateRedis(Path(tempfile.mkdtemp()))
    srv.start()
    p = free_port()
    server = serve(srv.url, p, Path(tempfile.mkdtemp()) / "uvicorn.log")
    try:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
        sys.exit(subprocess.run(schemathesis_cmd(p, n, "examples,coverage,fuzzing,stateful", None)).returncode)
    finally:
        server.terminate()
        srv.stop()
