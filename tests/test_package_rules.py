"""Rules of the house that code review alone would not keep."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
FORBIDDEN = {"asyncio", "socket", "selectors", "threading", "ssl", "time", "rembus",
             "subprocess", "sqlite3"}


def core_modules() -> list[Path]:
    return sorted((SRC / "rembus_proto").rglob("*.py"))


@pytest.mark.parametrize("path", core_modules(),
                         ids=lambda p: str(p.relative_to(SRC / "rembus_proto")))
def test_the_core_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("environ", "getenv"), f"{path.name} reads the environment"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "open", f"{path.name} opens a file"


def public_objects() -> list[tuple[str, object]]:
    found = []
    for package_name in ("rembus_proto", "rembus"):
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            if info.name.split(".")[-1].startswith("_") or info.name == "rembus.__main__":
                continue
            module = importlib.import_module(info.name)
            found.append((info.name, module))
            for name, obj in vars(module).items():
                if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                    continue
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    found.append((f"{info.name}.{name}", obj))
                    if inspect.isclass(obj):
                        for attr, member in vars(obj).items():
                            if not attr.startswith("_") and inspect.isfunction(member):
                                found.append((f"{info.name}.{name}.{attr}", member))
    return found


def test_every_public_name_has_a_docstring() -> None:
    missing = [name for name, obj in public_objects() if not inspect.getdoc(obj)]
    assert missing == []


def test_importing_the_client_api_stays_light() -> None:
    import subprocess
    import sys

    code = ("import sys, rembus, rembus.sync, rembus.blocking; "
            "print(sorted(m for m in ('cryptography', 'pyarrow', 'httpx', 'sqlite3', 'wsproto') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
