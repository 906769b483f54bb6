"""Structured logging: JSON lines when stderr is not a terminal, readable text when it is.

Ids of the contact being served (trace, call, ticket) live in context variables, so every
log line emitted while serving a call or ticket carries them without passing them around.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
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


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted: a handler holding the stream it was built with
    outlives a swapped stderr (a CLI run in-process under pytest's capture) and fails on the closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup(level: str = "info", json_lines: bool | None = None) -> None:
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler = _CurrentStderr()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel("WARNING")


_DIGIT = re.compile(r"\d")


def mask_number(value: str | None) -> str:
    """A phone number fit for logs at INFO: country code, first digit and last three kept (`+34 6•• ••• 123`), so a
    line can be matched to a complaint without the log holding the number. SIP URIs keep their host; anything
    that is not a number is masked whole but its length."""
    if not value:
        return ""
    raw = str(value)
    host = ""
    if raw.lower().startswith(("sip:", "sips:", "tel:")):
        raw = raw.split(":", 1)[1]
        raw, _, host = raw.partition("@")
        host = host.split(";", 1)[0]
    digits = "".join(_DIGIT.findall(raw))
    if len(digits) < 6:
        masked = "•" * min(len(raw), 12)
    else:
        cc = ""
        if raw.strip().startswith(("+", "00")) or (len(digits) == 11 and digits.startswith("34")):
            d = digits[2:] if raw.strip().startswith("00") else digits
            cc, digits = "+" + d[:2] + " ", d[2:]
        hidden = "•" * (len(digits) - 4)
        body = digits[0] + hidden + digits[-3:]
        masked = cc + " ".join(body[i:i + 3] for i in range(0, len(body), 3))
    return f"{masked}@{host}" if host else masked


def fields(**kw: Any) -> dict[str, Any]:
    """`log.info("msg", extra=fields(x=1))` adds structured fields to one line."""
    return {"fields": kw}
