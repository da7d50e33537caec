"""TLS for the broker: ``wss://`` with a certificate and its private key.

Components trust the broker's certificate through ``$HTTP_CA_BUNDLE``, the
single CA file in ``<rembus dir>/ca/`` or the ``ssl_context`` option (see
:mod:`rembus.client.transport`).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) for ``cert`` (PEM chain) and ``key``.

    Raises ``OSError`` if a file cannot be read and ``ssl.SSLError`` if they
    are not a matching certificate and key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


__all__ = ["server_context"]
