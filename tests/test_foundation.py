"""The foundation: configuration layering and validation, the store, the CLI, `atiende run`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from atiende.cli import main
from atiende.runtime import Runtime
from config.loader import ConfigError, load
from core.clock import FixedClock
from core.redis_server import PrivateRedis, free_port
from core.store import Keys, Store
from tests.conftest import REPO


def _write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(text, encoding="utf-8")


def test_defaults_load_with_scenario_knowledge() -> None:
    loaded = load(None, env={})
    s = loaded.settings
    assert s.calendar.default == "line"
    assert len(s.knowledge.offices) == 15
    assert any(u.name == "Servicio Extremeño de Salud" for u in s.knowledge.directory)
    assert s.sip.codecs[0] == "PCMA"


def test_layering_dir_then_env(tmp_path: Path) -> None:
    _write(tmp_path, "http.yaml", "port: 9001\n")
    _write(tmp_path, "sip.yaml", "port: 5070\n")
    loaded = load(tmp_path, env={"ATIENDE_SIP__PORT": "5080", "ATIENDE_REDIS_URL": "redis://x:1/0"})
    assert loaded.settings.http.port == 9001
    assert loaded.settings.sip.port == 5080
    assert loaded.settings.redis.url == "redis://x:1/0"
    assert loaded.settings.http.host == "127.0.0.1"  # untouched keys keep their defaults


def test_validate_reports_every_problem_with_place(tmp_path: Path) -> None:
    _write(tmp_path, "http.yaml", "port: [unclosed\n")
    _write(tmp_path, "sip.yaml", "host: 127.0.0.1\nbogus_key: 1\n")
    _write(tmp_path, "voicemail.yaml", "max_length_s: 120\ncallback_max_attempts: many\n")
    with pytest.raises(ConfigError) as err:
        load(tmp_path, env={})
    text = [str(i) for i in err.value.issues]
    assert any("http.yaml:" in t and "invalid YAML" in t for t in text), text
    assert any("sip.yaml:2" in t and "bogus_key" in t for t in text), text
    assert any("voicemail.yaml:2" in t and "callback_max_attempts" in t for t in text), text


def test_validate_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
    _write(tmp_path, "sip.yaml", "port: notanumber\n")
    _write(tmp_path, "unknown.yaml", "a: 1\n")
    assert main(["config", "validate", str(tmp_path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False and len(out["issues"]) == 2


def test_env_variable_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, env={"ATIENDE_HTTP__PORT": "99999"})
    assert err.value.issues[0].where == "ATIENDE_HTTP__PORT"


def test_runtime_reload_keeps_old_config_on_error(tmp_path: Path) -> None:
    _write(tmp_path, "http.yaml", "port: 9001\n")
    rt = Runtime(load(tmp_path, env={}), config_dir=tmp_path)
    old = rt.config_version
    _write(tmp_path, "http.yaml", "port: [broken\n")
    assert rt.reload() is False
    assert rt.config_version == old and rt.settings.http.port == 9001
    assert rt.last_reload_error and "http.yaml" in rt.last_reload_error
    _write(tmp_path, "http.yaml", "port: 9002\n")
    assert rt.reload() is True
    assert rt.settings.http.port == 9002 and rt.last_reload_error is None


@pytest.mark.anyio
async def test_sighup_reload_reads_the_files_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files are parsed and validated in a thread (0.3-0.4 s of CPU that would stall every call's audio);
    the swap and the listeners run on the loop, where the services they touch live."""
    import atiende.runtime as runtime_module

    _write(tmp_path, "http.yaml", "port: 9001\n")
    rt = Runtime(load(tmp_path, env={}), config_dir=tmp_path)
    loop_thread = threading.get_ident()
    read_in: list[int] = []
    heard: list[tuple[int, int]] = []

    def _load(*args: Any, **kwargs: Any) -> Any:
        read_in.append(threading.get_ident())
        return load(*args, **kwargs)

    monkeypatch.setattr(runtime_module, "load", _load)
    rt.on_reload(lambda s: heard.append((threading.get_ident(), s.http.port)))
    _write(tmp_path, "http.yaml", "port: 9002\n")
    assert await rt.reload_async() is True
    assert read_in and read_in[0] != loop_thread
    assert heard == [(loop_thread, 9002)]
    _write(tmp_path, "http.yaml", "port: [broken\n")
    assert await rt.reload_async() is False
    assert rt.settings.http.port == 9002 and rt.last_reload_error


def test_keys_are_prefixed() -> None:
    k = Keys("p")
    assert k.ticket("ABC").startswith("p:") and k.config_current("calendar").startswith("p:")


@pytest.mark.anyio
async def test_healthz_and_metrics(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["redis"] == "ok"
    m = await client.get("/metrics")
    assert m.status_code == 200 and "atiende_http_requests_total" in m.text


@pytest.mark.anyio
async def test_healthz_reports_redis_loss_and_recovery(tmp_path: Path) -> None:
    from desk_api.app import create_app

    server = PrivateRedis(tmp_path / "r")
    server.start()
    store = Store(server.url)
    rt = Runtime(load(None, env={}), store=store, clock=FixedClock(__import__("datetime").datetime.now().astimezone()))
    transport = httpx.ASGITransport(app=create_app(rt))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/healthz")).status_code == 200
            server.proc.kill()  # type: ignore[union-attr]
            server.proc.wait()  # type: ignore[union-attr]
            down = await c.get("/healthz")
            assert down.status_code == 503 and down.json()["redis"] == "unreachable"
            server.start()  # same port
            for _ in range(50):
                if (await c.get("/healthz")).status_code == 200:
                    break
                await anyio.sleep(0.1)
            assert (await c.get("/healthz")).status_code == 200
    finally:
        await store.close()
        server.stop()


def test_run_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ATIENDE_SERVICE__DATA_DIR": str(tmp_path / "var")}
    env.pop("ATIENDE_REDIS_URL", None)
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log_file, subprocess.Popen(
        [sys.executable, "-m", "atiende.cli", "run", "--no-sip", "--http", f"127.0.0.1:{port}"],
        cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
    ) as proc:
        _check_run(proc, port, tmp_path, log_path)


def _check_run(proc: subprocess.Popen[bytes], port: int, tmp_path: Path, log_path: Path) -> None:
    try:
        deadline = time.monotonic() + 30
        ok = False
        while time.monotonic() < deadline and not ok:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ok, log_path.read_text()
        children = subprocess.run(["pgrep", "-P", str(proc.pid), "redis-server"], capture_output=True, text=True)
        redis_pid = int(children.stdout.split()[0])
        proc.send_signal(signal.SIGHUP)  # a reload (read in a thread) leaves the service serving
        served = False
        for _ in range(50):
            with contextlib.suppress(httpx.HTTPError):
                served = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            if served:
                break
            time.sleep(0.1)
        assert served and proc.poll() is None, log_path.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert not Path(f"/proc/{redis_pid}").exists()
        assert (tmp_path / "var" / "redis" / "appendonlydir").is_dir()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_without_redis_server_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "ATIENDE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    res = subprocess.run([sys.executable, "-m", "atiende.cli", "run", "--no-sip"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 3
    assert "does not answer" in res.stderr and "Traceback" not in res.stderr
