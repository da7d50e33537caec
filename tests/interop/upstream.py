"""Virtualenvs with the upstream PyPI ``rembus`` releases, built once and cached.

The cache lives in ``$REMBUS_INTEROP_CACHE`` or ``~/.cache/rembus-interop``.
Each environment sits in a directory named after a hash of everything that
defines it (release pins, the constraints file, the Python interpreter and
:data:`LAYOUT`), is built in a scratch directory and renamed into place
only once complete and checked, so an interrupted build is never reused and
a changed definition builds a new one. Concurrent test runs serialise on a
lock file.

Building needs PyPI. When it cannot be reached the build fails with a
message saying so: the interop tests fail rather than skip, so that a
machine that cannot run them does not pass for one that did. Deselect them
with ``-m "not interop"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Bump to rebuild every cached environment after a change of the build steps.
LAYOUT = "1"
#: Upper bound of one ``pip install`` (downloads included), in seconds.
INSTALL_TIMEOUT = 1200.0
#: Upper bound of the other build steps, in seconds.
STEP_TIMEOUT = 300.0

#: DuckDB's version: the 0.8.23 broker loads the ``ducklake`` extension of
#: this version from ``$HOME/.duckdb/extensions/v<version>/<platform>/``.
DUCKDB_VERSION = "1.5.5"


@dataclass(frozen=True)
class Release:
    """One upstream release and what its environment needs."""

    name: str
    pins: tuple[str, ...]
    constraints: str
    """A ``pip freeze`` of a working environment, applied on the Python it was made with."""
    constraints_python: tuple[int, int]
    min_python: tuple[int, int]
    ducklake: bool = False


RELEASE_010 = Release(
    name="rembus-0.1.0",
    pins=("rembus==0.1.0", "websockets==17.4", "cbor2==6.3.0", "async-timeout==5.0.1"),
    constraints="constraints-0.1.0-py311.txt",
    constraints_python=(3, 11),
    min_python=(3, 10),
)

RELEASE_0823 = Release(
    name="rembus-0.8.23",
    pins=("rembus==0.8.23", "websockets==17.4", "cbor2==6.3.0", f"duckdb=={DUCKDB_VERSION}",
          f"duckdb-extension-ducklake=={DUCKDB_VERSION}"),
    constraints="constraints-0.8.23-py311.txt",
    constraints_python=(3, 11),
    min_python=(3, 11),
    ducklake=True,
)


class UpstreamUnavailable(RuntimeError):
    """The environment cannot be built (PyPI unreachable, a package missing...)."""


class UnsupportedPython(UpstreamUnavailable):
    """The release does not run on the Python that runs the tests."""


@dataclass(frozen=True)
class Venv:
    """A ready environment."""

    release: Release
    path: Path

    @property
    def python(self) -> Path:
        scripts = "Scripts" if os.name == "nt" else "bin"
        exe = "python.exe" if os.name == "nt" else "python"
        return self.path / scripts / exe

    @property
    def ducklake_extension(self) -> Path:
        """The DuckDB ``ducklake`` extension binary kept in this environment."""
        return self.path / "duckdb-extensions" / "ducklake.duckdb_extension"

    @property
    def duckdb_platform(self) -> str:
        return (self.path / "duckdb-extensions" / "platform").read_text().strip()

    def duckdb_home(self, home: Path) -> Path:
        """Make ``home`` a HOME where DuckDB finds ``ducklake`` without downloading it."""
        target = (home / ".duckdb" / "extensions" / f"v{DUCKDB_VERSION}" / self.duckdb_platform
                  / "ducklake.duckdb_extension")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                target.symlink_to(self.ducklake_extension)
            except OSError:
                shutil.copyfile(self.ducklake_extension, target)
        return home


def cache_root() -> Path:
    configured = os.environ.get("REMBUS_INTEROP_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "rembus-interop"


def _constraints(release: Release) -> Path | None:
    if sys.version_info[:2] != release.constraints_python:
        return None  # pins only: pip picks the rest for this Python
    return HERE / release.constraints


def _key(release: Release) -> str:
    constraints = _constraints(release)
    parts = {
        "layout": LAYOUT,
        "pins": release.pins,
        "constraints": constraints.read_text() if constraints else None,
        "python": [platform.python_implementation(), sys.version, sys.base_prefix],
        "machine": platform.machine(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no concurrent runs expected
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise UpstreamUnavailable(f"{what}: no result within {timeout:.0f} s "
                                  f"(is PyPI reachable?)\n{_tail(exc.stderr)}") from None
    if done.returncode != 0:
        raise UpstreamUnavailable(f"{what} failed (exit {done.returncode}); is PyPI reachable?\n"
                                  f"{_tail(done.stdout)}\n{_tail(done.stderr)}")
    return done.stdout


def _tail(text: str | bytes | None, lines: int = 30) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _install_ducklake(venv: Venv) -> None:
    """Keep the ``ducklake`` extension of the PyPI package where :meth:`Venv.duckdb_home` finds it.

    ``duckdb-extension-ducklake`` ships the official signed binary as
    ``duckdb_extension_ducklake/extensions/v<version>/ducklake.duckdb_extension``;
    DuckDB looks for it in ``$HOME/.duckdb/extensions/v<version>/<platform>/``.
    """
    probe = (
        "import duckdb, duckdb_extension_ducklake, json, pathlib;"
        "root = pathlib.Path(duckdb_extension_ducklake.__file__).parent;"
        "print(json.dumps({'platform': duckdb.sql('PRAGMA platform').fetchone()[0],"
        " 'version': duckdb.__version__,"
        f" 'file': str(root / 'extensions' / 'v{DUCKDB_VERSION}' / 'ducklake.duckdb_extension')}}))"
    )
    info = json.loads(_run([str(venv.python), "-c", probe], "locating the ducklake extension",
                           STEP_TIMEOUT).strip().splitlines()[-1])
    if info["version"] != DUCKDB_VERSION:
        raise UpstreamUnavailable(f"duckdb {info['version']} installed, {DUCKDB_VERSION} expected")
    folder = venv.ducklake_extension.parent
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(info["file"], venv.ducklake_extension)
    (folder / "platform").write_text(info["platform"] + "\n")
    # the broker must start without any download: check that DuckDB loads it offline
    with tempfile.TemporaryDirectory() as home:
        venv.duckdb_home(Path(home))
        env = {**os.environ, "HOME": home}
        _run([str(venv.python), "-c", "import duckdb; duckdb.sql('LOAD ducklake')"],
             "loading the ducklake extension offline", STEP_TIMEOUT, env)


def ensure(release: Release) -> Venv:
    """The environment of ``release``, built first if the cache does not have it."""
    if sys.version_info[:2] < release.min_python:
        raise UnsupportedPython(f"{release.name} needs Python >= "
                                  f"{'.'.join(map(str, release.min_python))}")
    root = cache_root()
    final = root / f"{release.name}-{_key(release)}"
    venv = Venv(release, final)
    if (final / "ready").exists():
        return venv
    with _locked(root / f"{release.name}.lock"):
        if (final / "ready").exists():
            return venv
        scratch = Path(tempfile.mkdtemp(prefix=f"{release.name}-build-", dir=root))
        try:
            building = Venv(release, scratch / "venv")
            _run([sys.executable, "-m", "venv", str(building.path)],
                 f"creating the {release.name} venv", STEP_TIMEOUT)
            cmd = [str(building.python), "-m", "pip", "install", "--quiet",
                   "--disable-pip-version-check", "--only-binary", ":all:",
                   "--timeout", "30", "--retries", "2", *release.pins]
            constraints = _constraints(release)
            if constraints is not None:
                cmd += ["--constraint", str(constraints)]
            _run(cmd, f"installing {' '.join(release.pins)} from PyPI", INSTALL_TIMEOUT)
            freeze = _run([str(building.python), "-m", "pip", "freeze"], "pip freeze",
                          STEP_TIMEOUT)
            (building.path / "freeze.txt").write_text(freeze)
            if release.ducklake:
                _install_ducklake(building)
            (building.path / "ready").write_text("ok\n")
            if final.exists():  # left by an older, interrupted layout
                shutil.rmtree(final)
            # always run as `<venv>/bin/python ...`, so the directory can move
            building.path.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return venv
