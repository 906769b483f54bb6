"""The core layer: clock, store, errors, logs, versioned config sections, audio format. Imports only config."""

__version__ = "0.1.0"
