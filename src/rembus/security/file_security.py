"""The broker's keys, tenants, admins and private topics, as files in its data dir.

:class:`FileSecurity` implements the router's
:class:`~rembus_proto.security_port.Security` port with the layout upstream
brokers use, so that keys and lists made by their tools work here::

    <data dir>/keys/<name>.<rsa|ecdsa>.<pem|der>   registered public keys
    <data dir>/tenants.json                        {"tenant": "pin", ".": "pin"}
    <data dir>/admins.json                         ["name", ...]
    <data dir>/topic_auth.json                     {"topic": ["name", ...]}

Tenants and admins are re-read when their file changes, so ``rembus broker
tenant|admin ...`` takes effect on a running broker. Every write replaces
the file atomically. A file that cannot be read fails closed: no tenant
(registration refused), no admin, and an unreadable key blocks the login of
its name instead of letting it in unauthenticated.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from rembus.security.crypto import check_public_key
from rembus_proto.security_port import KEY_TYPE_NAMES, PublicKey, SecurityError, is_valid_name

log = logging.getLogger("rembus.broker")

TENANTS_FILE = "tenants.json"
ADMINS_FILE = "admins.json"
TOPICS_FILE = "topic_auth.json"
KEYS_DIR = "keys"
#: Tenant of names without a dot.
DEFAULT_TENANT = "."


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (through a temporary file in the same directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _JsonFile:
    """A small JSON document, re-read when the file changes."""

    def __init__(self, path: Path, validate: Callable[[Any], Any], empty: Any) -> None:
        self.path = path
        self._validate = validate
        self._empty = empty
        self._stamp: tuple[int, int, int] | None = None
        self._value: Any = empty

    def load(self) -> Any:
        """The validated content; raises SecurityError if the file is unusable."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return self._empty
        except OSError as exc:
            raise SecurityError(f"cannot read {self.path}: {exc}") from None
        try:
            return self._validate(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise SecurityError(f"{self.path} is not valid: {exc}") from None

    def get(self) -> Any:
        """The content, cached while the file is unchanged; empty (fail closed) on errors."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._value = None, self._empty
            return self._empty
        except OSError as exc:
            log.error("cannot read %s: %s", self.path, exc)
            return self._empty
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._value = self.load()
            except SecurityError as exc:
                log.error("%s", exc)
                self._value = self._empty
            self._stamp = stamp
        return self._value

    def save(self, value: Any) -> None:
        write_atomically(self.path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def _tenants(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("expected an object {\"tenant\": \"pin\"}")
    out: dict[str, str] = {}
    for tenant, pin in value.items():
        if isinstance(pin, bool) or not isinstance(pin, (str, int)):
            raise ValueError(f"the pin of tenant {tenant!r} must be a string")
        out[str(tenant)] = str(pin)
    return out


def _names(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ValueError("expected a list of names [\"name\", ...]")
    return list(value)


def _topics(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise ValueError("expected an object {\"topic\": [\"name\", ...]}")
    return {str(topic): _names(names) for topic, names in value.items()}


class FileSecurity:
    """Keys, tenants, admins and private topics in ``data_dir`` (see the module doc)."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self.keys_dir = self.data_dir / KEYS_DIR
        self._tenants = _JsonFile(self.data_dir / TENANTS_FILE, _tenants, {})
        self._admins = _JsonFile(self.data_dir / ADMINS_FILE, _names, [])
        self._topics = _JsonFile(self.data_dir / TOPICS_FILE, _topics, {})

    def check(self) -> None:
        """Raise :class:`SecurityError` if a file exists but cannot be used."""
        for file in (self._tenants, self._admins, self._topics):
            file.load()

    # -- keys ----------------------------------------------------------------

    def key_paths(self, name: str) -> list[tuple[Path, int]]:
        """Candidate key files of ``name`` in lookup order: pem then der, rsa then ecdsa."""
        return [(self.keys_dir / f"{name}.{KEY_TYPE_NAMES[kt]}.{fmt}", kt)
                for fmt in ("pem", "der") for kt in KEY_TYPE_NAMES]

    def public_key(self, name: str) -> PublicKey | None:
        """The registered key of ``name`` (an unreadable file blocks the login)."""
        if not is_valid_name(name):
            return None
        for path, keytype in self.key_paths(name):
            try:
                return PublicKey(path.read_bytes(), keytype)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("cannot read the key of %s (%s): %s", name, path, exc)
                return PublicKey(b"", keytype)
        return None

    def registered(self) -> list[str]:
        """Every name with a key file (sorted)."""
        suffixes = {f".{kind}.{fmt}" for kind in KEY_TYPE_NAMES.values() for fmt in ("pem", "der")}
        try:
            files = [path.name for path in self.keys_dir.iterdir()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise SecurityError(f"cannot read {self.keys_dir}: {exc}") from None
        names = {file[:-len(suffix)] for file in files for suffix in suffixes
                 if file.endswith(suffix)}
        return sorted(name for name in names if is_valid_name(name))

    def save_key(self, name: str, key: PublicKey) -> None:
        """Write ``<name>.<rsa|ecdsa>.<pem|der>`` after checking the key."""
        if not is_valid_name(name):
            raise SecurityError(f"invalid name {name!r}")
        fmt = check_public_key(key)
        path = self.keys_dir / f"{name}.{KEY_TYPE_NAMES[key.keytype]}.{fmt}"
        try:
            write_atomically(path, key.data, 0o644)
        except OSError as exc:
            log.error("cannot store the key of %s: %s", name, exc)
            raise SecurityError("the broker cannot store the key") from None
        log.info("registered %s (%s)", name, path.name)

    def delete_key(self, name: str) -> None:
        """Remove every key file of ``name``."""
        if not is_valid_name(name):
            return
        try:
            for path, _ in self.key_paths(name):
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot remove the key of %s: %s", name, exc)
            raise SecurityError("the broker cannot remove the key") from None
        log.info("unregistered %s", name)

    # -- tenants ---------------------------------------------------------------

    def tenant_pin(self, tenant: str) -> str | None:
        """The PIN of ``tenant`` from ``tenants.json``."""
        pins: dict[str, str] = self._tenants.get()
        return pins.get(tenant)

    def tenants(self) -> dict[str, str]:
        """Every tenant and its PIN."""
        return dict(self._tenants.load())

    def set_tenant(self, tenant: str, pin: str) -> None:
        """Enable registration for ``tenant`` with ``pin`` (replaces its PIN)."""
        if not tenant or not pin:
            raise ValueError("tenant and pin must not be empty")
        pins = self.tenants()
        pins[tenant] = pin
        self._tenants.save(pins)

    def remove_tenant(self, tenant: str) -> bool:
        """Disable registration for ``tenant``; False if it was not enabled."""
        pins = self.tenants()
        if pins.pop(tenant, None) is None:
            return False
        self._tenants.save(pins)
        return True

    # -- admins ----------------------------------------------------------------

    def is_admin(self, name: str) -> bool:
        """Whether ``admins.json`` lists ``name``."""
        return name in self._admins.get()

    def admins(self) -> list[str]:
        """Every admin name."""
        return list(self._admins.load())

    def add_admin(self, name: str) -> bool:
        """Make ``name`` an admin; False if it already was."""
        if not name:
            raise ValueError("the name must not be empty")
        names = self.admins()
        if name in names:
            return False
        self._admins.save(sorted([*names, name]))
        return True

    def remove_admin(self, name: str) -> bool:
        """Take the admin right from ``name``; False if it did not have it."""
        names = self.admins()
        if name not in names:
            return False
        self._admins.save([n for n in names if n != name])
        return True

    # -- private topics ----------------------------------------------------------

    def private_topics(self) -> Mapping[str, Collection[str]]:
        """``topic_auth.json``; raises SecurityError if it exists and is unusable."""
        topics: dict[str, list[str]] = self._topics.load()
        return topics

    def save_private_topic(self, topic: str, names: Collection[str] | None) -> None:
        """Update one topic of ``topic_auth.json``."""
        try:
            topics: dict[str, list[str]] = dict(self._topics.load())
            if names is None:
                topics.pop(topic, None)
            else:
                topics[topic] = sorted(names)
            self._topics.save(topics)
        except OSError as exc:
            log.error("cannot save %s: %s", self._topics.path, exc)
            raise SecurityError("the broker cannot save the topic authorizations") from None


__all__ = ["ADMINS_FILE", "KEYS_DIR", "TENANTS_FILE", "TOPICS_FILE", "FileSecurity",
           "write_atomically"]
