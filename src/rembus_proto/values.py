"""Named tuples that behave as values of their own type.

Messages and client events are named tuples: building one costs a fraction
of a frozen dataclass (whose ``__init__`` writes each slot through
``object.__setattr__``), and they are built for every message. A plain named
tuple equals any tuple with the same items, so ``Ack(id) == Ack2(id)``;
:func:`typed_equality` makes equality and hashing take the type into account.
"""

from __future__ import annotations

from typing import Any, TypeVar

_T = TypeVar("_T", bound=type)
_tuple_eq: Any = tuple.__eq__
_tuple_hash: Any = tuple.__hash__


def _equal(self: Any, other: object) -> bool:
    return type(self) is type(other) and _tuple_eq(self, other) is True


def _not_equal(self: Any, other: object) -> bool:
    return not _equal(self, other)


def typed_equality(*classes: _T) -> None:
    """Make instances of each named tuple class equal only to instances of that class."""
    for cls in classes:
        cls.__eq__ = _equal  # type: ignore[method-assign,assignment]
        cls.__ne__ = _not_equal  # type: ignore[method-assign,assignment]
        cls.__hash__ = _tuple_hash  # type: ignore[method-assign]
