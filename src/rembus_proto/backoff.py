"""The delays between reconnection attempts, shared by every client driver."""

from __future__ import annotations

import math
from collections.abc import Callable


class Backoff:
    """Doubling delays from ``initial`` up to ``maximum`` seconds, with jitter.

    ``jitter()`` returns a number in ``[0, 1)`` (e.g. ``random.random``); each
    delay is drawn in ``[d/2, d)`` of the current step ``d``, so that many
    components that lost the same broker do not come back all at once.
    :meth:`reset` after a successful connection starts again from ``initial``.
    """

    __slots__ = ("_initial", "_jitter", "_maximum", "_step")

    def __init__(self, initial: float, maximum: float, jitter: Callable[[], float]) -> None:
        for name, value in (("initial", initial), ("maximum", maximum)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds > 0, "
                                 f"not {value!r}")
        self._initial = float(initial)
        self._maximum = max(float(maximum), self._initial)
        self._jitter = jitter
        self._step = self._initial

    def next_delay(self) -> float:
        """The delay before the next attempt; the one after it doubles (up to ``maximum``)."""
        step = self._step
        self._step = min(step * 2, self._maximum)
        return step * (0.5 + 0.5 * self._jitter())

    def reset(self) -> None:
        """A connection succeeded: the next delay starts from ``initial`` again."""
        self._step = self._initial


__all__ = ["Backoff"]
