"""Which event loop runs the broker and :func:`rembus.run`: uvloop when installed.

uvloop (the ``rembus[speed]`` extra) is a drop-in asyncio event loop written
in Cython; it is optional, and the standard loop is used without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: The choices of ``--loop``: ``auto`` is uvloop when installed, else asyncio.
LOOPS = ("auto", "uvloop", "asyncio")


class LoopUnavailable(RuntimeError):
    """``uvloop`` was asked for and is not installed."""


def uses_uvloop(loop: str = "auto") -> bool:
    """Whether ``loop`` (one of :data:`LOOPS`) means uvloop here.

    Raises :class:`LoopUnavailable` for ``"uvloop"`` without uvloop installed,
    ``ValueError`` for a name not in :data:`LOOPS`.
    """
    if loop not in LOOPS:
        raise ValueError(f"the event loop is one of {', '.join(LOOPS)}, not {loop!r}")
    if loop == "asyncio":
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        installed = False
    else:
        installed = True
    if loop == "uvloop" and not installed:
        raise LoopUnavailable("uvloop is not installed: pip install 'rembus[speed]'")
    return installed


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """Run ``main`` as :func:`asyncio.run` does, on the event loop ``loop`` names."""
    try:
        fast = uses_uvloop(loop)
    except (ValueError, LoopUnavailable):
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    if fast:
        import uvloop

        result: T = uvloop.run(main)
        return result
    return asyncio.run(main)
