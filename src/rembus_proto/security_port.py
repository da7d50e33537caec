"""The security port of the broker's router, and an in-memory implementation.

The router never reads a key file, a tenant list or an admin list: it asks
a :class:`Security` object. The broker wires in one backed by files in its
data directory; tests use :class:`MemorySecurity`. Signatures are checked by
an injected :data:`Verify` callable, so that this package does not depend on
a cryptography library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

#: REGISTER ``keytype`` of an RSA key (RSASSA-PKCS1-v1_5 with SHA-256).
RSA = 1
#: REGISTER ``keytype`` of an ECDSA key (P-256 with SHA-256).
ECDSA = 2
#: Key type -> the type part of a broker key file name (spec 5.5).
KEY_TYPE_NAMES = {RSA: "rsa", ECDSA: "ecdsa"}

_NAME = re.compile(r"[^\x00-\x20\x7f/\\:*?\"<>|.][^\x00-\x20\x7f/\\:*?\"<>|]{0,199}")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` can be registered.

    A registered name becomes a file name on the broker: it must be 1 to 200
    printable characters without spaces, path separators or characters that
    some file systems refuse, and must not start with a dot.
    """
    return _NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A registered public key, as the component sent it."""

    data: bytes
    """PEM or DER bytes; PKCS#1 (RSA) or SubjectPublicKeyInfo."""
    keytype: int
    """:data:`RSA` or :data:`ECDSA`."""


class SecurityError(Exception):
    """A :class:`Security` operation could not be done; the text is shown to the peer."""


#: ``verify(key, signed_bytes, signature) -> bool``: checks a challenge answer.
Verify = Callable[[PublicKey, bytes, bytes], bool]


class Security(Protocol):
    """Keys, tenants, admins and private topics of a broker."""

    def public_key(self, name: str) -> PublicKey | None:
        """The registered key of ``name``, ``None`` when the name is not registered."""

    def save_key(self, name: str, key: PublicKey) -> None:
        """Register ``key`` for ``name``; raise :class:`SecurityError` if it cannot."""

    def delete_key(self, name: str) -> None:
        """Forget the key of ``name``; raise :class:`SecurityError` if it cannot."""

    def tenant_pin(self, tenant: str) -> str | None:
        """The registration PIN of ``tenant``, ``None`` when the tenant is not enabled."""

    def is_admin(self, name: str) -> bool:
        """Whether ``name`` may run the broker's privileged admin commands."""

    def private_topics(self) -> Mapping[str, Collection[str]]:
        """Every private topic and the names authorized on it (read once, at start)."""

    def save_private_topic(self, topic: str, names: Collection[str] | None) -> None:
        """Persist the authorized names of a private topic; ``None`` makes it public.

        Raise :class:`SecurityError` if it cannot be saved.
        """


class MemorySecurity(Security):
    """A :class:`Security` in memory, for tests and brokers without files."""

    def __init__(self, *, tenants: Mapping[str, str] | None = None,
                 admins: Collection[str] = (),
                 keys: Mapping[str, PublicKey] | None = None,
                 topics: Mapping[str, Collection[str]] | None = None) -> None:
        self.tenants: dict[str, str] = dict(tenants or {})
        self.admins: set[str] = set(admins)
        self.keys: dict[str, PublicKey] = dict(keys or {})
        self.topics: dict[str, set[str]] = {t: set(n) for t, n in (topics or {}).items()}

    def public_key(self, name: str) -> PublicKey | None:
        return self.keys.get(name)

    def save_key(self, name: str, key: PublicKey) -> None:
        if key.keytype not in KEY_TYPE_NAMES or not key.data:
            raise SecurityError("invalid public key")
        self.keys[name] = key

    def delete_key(self, name: str) -> None:
        self.keys.pop(name, None)

    def tenant_pin(self, tenant: str) -> str | None:
        return self.tenants.get(tenant)

    def is_admin(self, name: str) -> bool:
        return name in self.admins

    def private_topics(self) -> Mapping[str, Collection[str]]:
        return {topic: set(names) for topic, names in self.topics.items()}

    def save_private_topic(self, topic: str, names: Collection[str] | None) -> None:
        if names is None:
            self.topics.pop(topic, None)
        else:
            self.topics[topic] = set(names)


__all__ = [
    "ECDSA",
    "KEY_TYPE_NAMES",
    "RSA",
    "MemorySecurity",
    "PublicKey",
    "Security",
    "SecurityError",
    "Verify",
    "is_valid_name",
]
