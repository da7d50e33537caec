"""A real TLS ClientHello, as a ``wss://`` client sends it first (made in memory, no socket)."""

from __future__ import annotations

import contextlib
import ssl


def client_hello() -> bytes:
    """The first bytes a TLS client sends: a handshake record (0x16) with a ClientHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):  # waits for the ServerHello,
        tls.do_handshake()                            # the ClientHello is written
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:8]
    return hello
