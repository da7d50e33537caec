"""The ``rembus`` command."""

from rembus.cli.command import main

__all__ = ["main"]
