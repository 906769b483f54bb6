"""Atiende core: the pieces every package shares (clock, store, errors, logs, runtime) and the CLI."""

__version__ = "0.1.0"
