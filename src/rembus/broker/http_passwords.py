"""Passwords of the HTTP API's Basic authentication, in the broker's data dir.

WebSocket components log in by signing a challenge with their private key;
an HTTP client sends a user and a password instead. The passwords live in
``<data dir>/http_passwords.json`` as ``{"name": "pbkdf2_sha256$iterations$salt$hash"}``
(salt and hash in base64), never in clear. ``rembus broker http-password``
sets one. The file is read again when it changes; one that cannot be read
lets nobody in. After :data:`MAX_FAILURES` wrong passwords in a row a name is
refused, right password or not, for :data:`LOCKOUT` seconds: each check
costs a slow key derivation, which must not be had at will.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from pathlib import Path

from rembus.security.file_security import write_atomically

log = logging.getLogger("rembus.broker")

PASSWORDS_FILE = "http_passwords.json"
ITERATIONS = 200_000
MAX_FAILURES = 5
LOCKOUT = 60.0
_SCHEME = "pbkdf2_sha256"


def hash_password(password: str, *, iterations: int = ITERATIONS,
                  salt: bytes | None = None) -> str:
    """The stored form of ``password``."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "$".join((_SCHEME, str(iterations), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches its stored form (``False`` for a malformed one)."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != _SCHEME or not 0 < int(iterations) <= 10_000_000:
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.pbkdf2_hmac("sha256", password.encode(),
                                  base64.b64decode(salt, validate=True), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


class HttpPasswords:
    """The password file of a data dir; :meth:`verify` is what the HTTP API asks."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / PASSWORDS_FILE
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, str] = {}
        self._verified: dict[str, tuple[str, bytes]] = {}
        """Name -> (stored form, SHA-256 of the password) of the last good login:
        the slow key derivation runs once per name and password."""
        self._failures: dict[str, tuple[int, float]] = {}
        """Name (with a password) -> (wrong passwords in a row, refused until)."""
        self._lock = threading.Lock()  # verify runs on worker threads

    def _load(self) -> dict[str, str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._entries = None, {}
            return self._entries
        except OSError as exc:
            log.error("cannot read %s: %s", self.path, exc)
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_bytes())
            except (OSError, ValueError) as exc:
                log.error("cannot read %s: %s; no HTTP password is accepted", self.path, exc)
                return {}
            if not isinstance(data, dict):
                log.error("%s is not a JSON object; no HTTP password is accepted", self.path)
                return {}
            self._entries = {k: v for k, v in data.items()
                             if isinstance(k, str) and isinstance(v, str)}
            self._stamp = stamp
        return self._entries

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is the one set for ``name``."""
        with self._lock:
            stored = self._load().get(name)
            known = self._verified.get(name)
            failures, until = self._failures.get(name, (0, 0.0))
        if stored is None or time.monotonic() < until:
            return False
        quick = hashlib.sha256(password.encode()).digest()
        if known is not None and known[0] == stored:
            ok = hmac.compare_digest(known[1], quick)
        else:
            ok = check_password(password, stored)
        with self._lock:
            if ok:
                self._verified[name] = (stored, quick)
                self._failures.pop(name, None)
            else:
                failures += 1
                locked = time.monotonic() + LOCKOUT if failures >= MAX_FAILURES else 0.0
                self._failures[name] = (0 if locked else failures, locked)
                if locked:
                    log.warning("HTTP API: %d wrong passwords in a row for %s, refused for "
                                "%g s", failures, name, LOCKOUT)
        return ok

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` has a password."""
        return name in self._load()

    def set(self, name: str, password: str | None) -> None:
        """Set the password of ``name`` (``None``: remove it)."""
        entries = dict(self._load())
        if password is None:
            entries.pop(name, None)
        else:
            entries[name] = hash_password(password)
        write_atomically(self.path, json.dumps(entries, indent=2, sort_keys=True).encode())


__all__ = ["LOCKOUT", "MAX_FAILURES", "PASSWORDS_FILE", "HttpPasswords", "check_password",
           "hash_password"]
