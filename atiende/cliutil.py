"""Helpers the `atiende` subcommands share: the config option, error exit, instants, an offline runtime."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

from atiende.runtime import Runtime
from core.clock import Clock


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="DIR", type=Path, default=None,
                   help="config directory layered over the built-in defaults (default: $ATIENDE_CONFIG)")


def config_dir_of(args: argparse.Namespace) -> Path | None:
    d = getattr(args, "config", None)
    if d is None and os.environ.get("ATIENDE_CONFIG"):
        d = Path(os.environ["ATIENDE_CONFIG"])
    return Path(d) if d is not None else None


def fail(message: str, code: int = 2) -> int:
    print(f"atiende: {message}", file=sys.stderr)
    return code


def parse_instant(text: str) -> datetime:
    """ISO-8601 instant; a naive one is rejected here (commands that accept local time handle it)."""
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return value


def offline_runtime(args: argparse.Namespace, clock: Clock | None = None) -> Runtime:
    """A Runtime without a store, for commands that only need configuration (hours, route, say...).

    Exits with a readable list of problems when the configuration is invalid.
    """
    from config.loader import ConfigError, load

    try:
        loaded = load(config_dir_of(args))
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"atiende: config: {issue}", file=sys.stderr)
        raise SystemExit(2) from None
    return Runtime(loaded, store=None, clock=clock, config_dir=config_dir_of(args))
