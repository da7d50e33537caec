"""Opening the connection of a blocking component: TCP (and TLS), then the WebSocket upgrade.

Each step is bounded by ``open_timeout``; the socket blocks only here, and
is handed over non-blocking once the upgrade is done.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

from rembus.client.options import Options
from rembus.client.transport import connect_error, default_ssl_context, describe_os_error
from rembus.client.url import ComponentURL
from rembus_proto import ClientConnection, ClientSession, ProtocolError
from rembus_proto.ws import WSConfig

#: Bytes read from the socket at most per call.
READ_SIZE = 1 << 20


def open_session(url: ComponentURL, conn: ClientConnection,
                 options: Options) -> tuple[socket.socket, ClientSession]:
    """Connect to ``url`` and complete the WebSocket upgrade for ``conn``.

    Returns the socket (non-blocking) and the open session; raises
    :class:`~rembus.errors.RembusConnectionClosed` saying what did not happen.
    """
    timeout = options.open_timeout
    try:
        sock = socket.create_connection((url.host, url.port), timeout=timeout)
        if url.secure:
            context = options.ssl_context or default_ssl_context()
            sock = context.wrap_socket(sock, server_hostname=url.host)
    except OSError as exc:
        raise connect_error(url, describe_os_error(exc, timeout)) from None
    session = ClientSession(conn, url.endpoint.split("://", 1)[1], "/",
                            now=time.monotonic(), open_timeout=timeout,
                            config=WSConfig(max_message_size=options.max_message_size))
    try:
        _upgrade(sock, session)
    except OSError as exc:
        sock.close()
        raise connect_error(url, describe_os_error(exc, timeout)) from None
    except BaseException:
        sock.close()
        raise
    if not session.is_open:
        sock.close()
        raise connect_error(url, session.end_reason or "the WebSocket upgrade failed")
    sock.setblocking(False)
    return sock, session


def _upgrade(sock: socket.socket, session: ClientSession) -> None:
    """Send the upgrade request and wait for the answer (or the session's deadline)."""
    sock.settimeout(None)
    while not session.is_open and not session.ended:
        sock.sendall(b"".join(session.data_to_send()))
        deadline = session.next_deadline()
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        readable = pending or select.select([sock], [], [], wait)[0]
        if not readable:
            session.handle_timer(time.monotonic())
            continue
        with contextlib.suppress(ProtocolError):  # then it ended; Disconnected says why
            session.receive_data(sock.recv(READ_SIZE), time.monotonic())
    sock.sendall(b"".join(session.data_to_send()))
