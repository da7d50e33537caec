"""Run a module or a script as if only the project's core dependencies were installed.

``python core_only.py DEPS -m MODULE ARGS...`` or ``python core_only.py DEPS SCRIPT ARGS...``
where DEPS is a comma-separated list of distributions (``[project].dependencies``).
Importing any other installed third-party package (pyarrow, httpx, pytest...)
raises ``ModuleNotFoundError``, as it would after a plain ``pip install .``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import re
import runpy
import sys
from collections.abc import Sequence
from types import ModuleType

OURS = {"rembus", "rembus_proto"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(requirement: str) -> str:
    """The canonical distribution name of a requirement such as ``cbor2>=6.3; ...``."""
    match = re.match(r"\s*([A-Za-z0-9._-]+)", requirement)
    assert match, requirement
    return _canonical(match.group(1))


def closure(distributions: Sequence[str]) -> set[str]:
    """``distributions`` and everything they require (extras left out), canonical names."""
    seen: set[str] = set()
    todo = [_name(requirement) for requirement in distributions]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # a missing core dependency fails at its import, as it should
        for requirement in requires:
            if "extra ==" not in requirement.replace('"', "").replace("'", ""):
                todo.append(_name(requirement))
    return seen


def importable(distributions: Sequence[str]) -> set[str]:
    """Top-level module names of ``distributions`` and their requirements."""
    allowed = closure(distributions)
    return {module for module, dists in importlib.metadata.packages_distributions().items()
            if any(_canonical(dist) in allowed for dist in dists)}


class CoreOnly(importlib.abc.MetaPathFinder):
    """Refuses third-party top-level modules that are not in ``allowed``."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed | OURS | set(sys.stdlib_module_names)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top not in self.allowed and top not in sys.modules:
            raise ModuleNotFoundError(f"{top} is not a core dependency", name=fullname)
        return None


def main(argv: list[str]) -> None:
    deps, *rest = argv
    sys.meta_path.insert(0, CoreOnly(importable(deps.split(","))))
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
