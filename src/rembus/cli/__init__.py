"""The ``rembus`` command."""

from rembus.cli.main import main

__all__ = ["main"]
