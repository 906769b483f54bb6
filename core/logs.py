"""Structured logging: JSON lines when stderr is not a terminal, readable text when it is.

Ids of the contact being served (trace, call, ticket) live in context variables, so every
log line emitted while serving a call or ticket carries them without passing them around.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_ids: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("atiende_log_ids", default={})  # noqa: B039


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Attach ids (trace_id, call_id, ticket_id...) to every log line in this context."""
    merged = {**_ids.get(), **{k: v for k, v in ids.items() if v}}
    token = _ids.set(merged)
    try:
        yield
    finally:
        _ids.reset(token)


def bind(**ids: str | None) -> None:
    """Attach ids for the rest of the current task (each asyncio task has its own context)."""
    _ids.set({**_ids.get(), **{k: v for k, v in ids.items() if v}})


def current_ids() -> dict[str, str]:
    return dict(_ids.get())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_ids.get())
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{datetime.now().strftime('%H:%M:%S')} {record.levelname[0]} {record.name}: {record.getMessage()}"
        ids = " ".join(f"{k}={v}" for k, v in _ids.get().items())
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            ids = " ".join([ids, *(f"{k}={v}" for k, v in extra.items())]).strip()
        if ids:
            base += f" [{ids}]"
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def setup(level: str = "info", json_lines: bool | None = None) -> None:
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel("WARNING")


def fields(**kw: Any) -> dict[str, Any]:
    """`log.info("msg", extra=fields(x=1))` adds structured fields to one line."""
    return {"fields": kw}
