"""Where Rembus keeps its files."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_data_dir() -> Path:
    """The platform's per-user data directory for Rembus.

    ``$REMBUS_DIR`` wins; else ``~/Library/Application Support/rembus`` on
    macOS, ``%LOCALAPPDATA%\\rembus`` on Windows and
    ``$XDG_DATA_HOME/rembus`` (default ``~/.local/share/rembus``) elsewhere.
    """
    override = os.environ.get("REMBUS_DIR")
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "rembus"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "rembus"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else home / ".local" / "share") / "rembus"
