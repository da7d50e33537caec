"""Where Rembus keeps its files.

``$REMBUS_DIR`` overrides both directories. Otherwise the broker's data (its
database, keys of registered components, tenants, admins) lives in the
platform's user data dir and a component's own files (its private key, a CA
to trust) in the user config dir, as upstream Rembus does:

* Linux and others: ``$XDG_DATA_HOME/rembus`` (``~/.local/share/rembus``) and
  ``$XDG_CONFIG_HOME/rembus`` (``~/.config/rembus``);
* macOS: ``~/Library/Application Support/rembus`` for both;
* Windows: ``%LOCALAPPDATA%\\rembus`` for both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _user_dir(xdg_variable: str, xdg_default: str) -> Path:
    override = os.environ.get("REMBUS_DIR")
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "rembus"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "rembus"
    xdg = os.environ.get(xdg_variable)
    return (Path(xdg) if xdg else home / xdg_default) / "rembus"


def user_data_dir() -> Path:
    """The broker's default data dir."""
    return _user_dir("XDG_DATA_HOME", ".local/share")


def rembus_dir() -> Path:
    """A component's own files (``<name>/.secret``, ``ca/``)."""
    return _user_dir("XDG_CONFIG_HOME", ".config")
