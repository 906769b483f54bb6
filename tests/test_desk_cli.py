"""`atiende desk ...` against a real Redis."""

from __future__ import annotations

import io
import json
import uuid

import pytest

from atiende.cli import main
from core.redis_server import PrivateRedis


def test_create_user_key_users_and_status(redis_server: PrivateRedis, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATIENDE_REDIS__PREFIX", f"cli{uuid.uuid4().hex[:6]}")
    url = ["--redis-url", redis_server.url]
    monkeypatch.setattr("sys.stdin", io.StringIO("una-clave-larga\n"))
    assert main(["desk", "create-user", "rosa", "--name", "Rosa", "--role", "agent_n1", "--password-stdin", *url]) == 0
    assert json.loads(capsys.readouterr().out)["agent_id"] == "rosa"
    monkeypatch.setattr("sys.stdin", io.StringIO("una-clave-larga\n"))
    assert main(["desk", "create-user", "rosa", "--role", "agent_n1", "--password-stdin", *url]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["desk", "create-key", "gw", "--role", "supervisor", *url]) == 0
    assert json.loads(capsys.readouterr().out)["key"].startswith("atk_")
    assert main(["desk", "users", *url]) == 0
    assert "rosa" in [json.loads(line)["username"] for line in capsys.readouterr().out.splitlines()]
    assert main(["desk", "status", "K7M-4PX", *url]) == 1
    assert "no ticket" in capsys.readouterr().err
    monkeypatch.delenv("ATIENDE_REDIS_URL", raising=False)
    assert main(["desk", "users"]) == 2
