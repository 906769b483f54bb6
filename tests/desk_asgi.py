"""`uvicorn --factory tests.desk_asgi:app` — the real app on the Redis in ATIENDE_REDIS_URL (fuzz and process tests)."""

from __future__ import annotations

from typing import Any


def app() -> Any:
    from atiende.runtime import Runtime
    from config.loader import load
    from core.store import Store
    from desk_api.app import create_app

    loaded = load(None)
    return create_app(Runtime(loaded, store=Store(loaded.settings.redis.url or "", prefix=loaded.settings.redis.prefix)))
