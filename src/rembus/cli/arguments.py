"""Argument types, environment defaults and the parser class shared by the ``rembus`` commands.

Every bad value is a usage error: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import NoReturn

#: Exit code of a usage error (bad option or value), as argparse uses.
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block) and exit with 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` on one line and exit with 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def env_float(name: str, default: float) -> float:
    """The number in environment variable ``name``, else ``default``; exits 2 on garbage."""
    raw = os.environ.get(name, "").strip()
    try:
        return positive_float(raw) if raw else default
    except (ValueError, argparse.ArgumentTypeError):
        usage_error(f"{name} must be a positive number, not {raw!r}")


def env_port(name: str, default: int) -> int:
    """The port number in environment variable ``name``, else ``default``; exits 2 on garbage."""
    raw = os.environ.get(name, "").strip()
    try:
        return port(raw) if raw else default
    except argparse.ArgumentTypeError:
        usage_error(f"{name} must be a port number (0-65535), not {raw!r}")


def usage_error(message: str) -> NoReturn:
    """A usage error found outside argparse (an environment variable): one line, exit 2."""
    sys.stderr.write(f"rembus: error: {message}\n")
    raise SystemExit(EXIT_USAGE)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def port(text: str) -> int:
    """An argparse type: a TCP port number, 0 to 65535 (0: any free port)."""
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (0-65535), not {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer above 0."""
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of 0 or more."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, not {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value
