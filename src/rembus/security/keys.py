"""Private keys of components and challenge signatures (spec 5.3, 5.5).

A registered component keeps its private key (PEM) in
``<rembus dir>/<name>/.secret``; the rembus dir is ``$REMBUS_DIR`` or
``~/.config/rembus`` (the platform's user config dir). RSA keys sign with
PKCS#1 v1.5 and SHA-256, EC keys (P-256) with ECDSA and SHA-256.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rembus.paths import rembus_dir


class KeyNotFound(Exception):
    """The component has no usable private key."""


def secret_path(name: str) -> Path:
    """Where the private key of ``name`` lives."""
    return rembus_dir() / name / ".secret"


def load_private_key(name: str) -> Any:
    """The private key of ``name`` (raises :class:`KeyNotFound` with what to do)."""
    path = secret_path(name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyNotFound(f"{name!r} is registered on the broker but {path} does not exist; "
                          f"register the component on this machine (rembus register) or "
                          f"copy its key there") from None
    except OSError as exc:
        raise KeyNotFound(f"cannot read {path}: {exc}") from None
    try:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError:
        raise KeyNotFound("signing needs the cryptography package: "
                          "python -m pip install cryptography") from None
    try:
        return load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise KeyNotFound(f"{path} is not a PEM private key: {exc}") from None


def sign(name: str, data: bytes) -> bytes:
    """Sign ``data`` with the private key of ``name``."""
    key = load_private_key(name)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return bytes(key.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return bytes(key.sign(data, ec.ECDSA(hashes.SHA256())))
    raise KeyNotFound(f"the key of {name!r} is neither RSA nor EC")
