"""Transports of a component: a WebSocket carrying whole Rembus messages."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

from rembus.client.options import Options
from rembus.client.url import ComponentURL
from rembus.client.wire import CLOSE_TIMEOUT, Wire, WireClosed
from rembus.errors import RembusConnectionClosed, overwritten
from rembus.paths import rembus_dir
from rembus_proto.ws import WSConfig


class Transport(Protocol):
    """What a driver needs from a connection."""

    def send(self, frames: list[bytes]) -> None:
        """Queue whole messages for writing."""

    async def recv_many(self) -> list[bytes]:
        """Every message received so far (at least one); raises ConnectionError at the end."""

    async def drain(self) -> None:
        """Wait while the write buffer is full."""

    async def close(self) -> None:
        """Close the connection."""


class NativeTransport(Transport):
    """asyncio streams and the sans-IO WebSocket layer."""

    def __init__(self, wire: Wire, close_timeout: float = CLOSE_TIMEOUT) -> None:
        self._wire = wire
        self._close_timeout = close_timeout

    def send(self, frames: list[bytes]) -> None:
        try:
            self._wire.send_all(frames)
        except WireClosed as exc:
            raise ConnectionError(str(exc)) from None

    async def recv_many(self) -> list[bytes]:
        try:
            return await self._wire.recv_many()
        except WireClosed as exc:
            closed = self._wire.closed
            if closed is not None and (error := overwritten(closed.code, closed.reason)):
                raise error from None
            raise ConnectionError(str(exc)) from None

    async def drain(self) -> None:
        await self._wire.drain()

    async def close(self) -> None:
        await self._wire.close(self._close_timeout)


#: Makes the transport of one connection attempt of a component.
Opener = Callable[[ComponentURL, Options], Awaitable[Transport]]


def default_ssl_context() -> ssl.SSLContext:
    """Trust ``$HTTP_CA_BUNDLE``, else the single CA file in ``<rembus dir>/ca/``,
    else the system's store."""
    bundle = os.environ.get("HTTP_CA_BUNDLE")
    if bundle:
        return ssl.create_default_context(cafile=bundle)
    ca_dir = rembus_dir() / "ca"
    if ca_dir.is_dir():
        files = sorted(p for p in ca_dir.iterdir() if p.is_file())
        if len(files) == 1:
            return ssl.create_default_context(cafile=str(files[0]))
    return ssl.create_default_context()


async def open_transport(url: ComponentURL, options: Options) -> Transport:
    """Connect to the broker of ``url``; raises :class:`RembusConnectionClosed` saying what
    was tried and what did not happen (see :func:`connect_error`)."""
    context = None
    if url.secure:
        context = options.ssl_context or default_ssl_context()
    timeout = options.open_timeout
    try:
        if options.transport == "httpx":
            from rembus.client.httpx_transport import open_httpx

            return await open_httpx(url, options, context)
        config = WSConfig(max_message_size=options.max_message_size)
        wire = await Wire.open(url.host, url.port, "/", config=config, ssl_context=context,
                               timeout=timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise connect_error(url, describe_os_error(exc, timeout)) from None
    return NativeTransport(wire, options.timeout)


def connect_error(url: ComponentURL, reason: str) -> RembusConnectionClosed:
    """The one error of every driver when it cannot connect: the URL, then what did not happen."""
    return RembusConnectionClosed(f"cannot connect to {url.endpoint}: {reason}")


def describe_os_error(exc: BaseException, timeout: float) -> str:
    """What went wrong opening the TCP (and TLS) connection, in words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, socket.timeout)) and (
            not text or text == "timed out"):
        return f"no TCP connection within {timeout:g} s"
    return text or type(exc).__name__
