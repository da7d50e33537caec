"""Argument types and environment defaults shared by the ``rembus`` commands."""

from __future__ import annotations

import argparse
import os


def env_float(name: str, default: float) -> float:
    """The number in environment variable ``name``, else ``default``; exits on garbage."""
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"rembus: {name} must be a number, not {raw!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: an integer above 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value
