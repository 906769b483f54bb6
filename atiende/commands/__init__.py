"""Subcommands of the `atiende` CLI, one module per area; each has `register(subparsers)`."""
