"""The application: the composition root (runtime, wiring), the service runner and the `atiende` CLI."""

from core import __version__

__all__ = ["__version__"]
