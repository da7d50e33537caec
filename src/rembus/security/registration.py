"""Register a component's key with a broker, and unregister it (spec 5.5, 5.6).

``await rembus.register("ws://host:8000/myname", "11223344")`` makes a key
pair, sends REGISTER ``[10, id, name, pin, public key, keytype]`` (through
:meth:`~rembus_proto.ClientConnection.register`) on an anonymous connection
and, once the broker answered OK, keeps the private key in
``<rembus dir>/<name>/.secret`` (PEM, readable by the owner only). From
then on the component logs in by signing the broker's challenge.

``await rembus.unregister("ws://host:8000/myname")`` logs in with that key,
sends UNREGISTER and, after OK, deletes the local ``.secret``.

:func:`register_sync` and :func:`unregister_sync` do the same for code
without an event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from rembus.client.options import Options, make_options
from rembus.errors import LoginFailed, RembusConnectionClosed, RembusTimeout, error_for
from rembus.security import keys
from rembus_proto import ClientConnection, challenge_input
from rembus_proto.client_events import (
    ChallengeRequested,
    Connected,
    LoginRefused,
    RequestAborted,
    RequestCompleted,
    RequestTimedOut,
)

if TYPE_CHECKING:  # cryptography is imported only when a key is made
    from rembus.security.crypto import KeyType, PrivateKey
from rembus.client.transport import Transport, open_transport
from rembus.client.url import ComponentURL, parse


def _named(url: str | None) -> tuple[ComponentURL, str]:
    parsed = parse(url)
    if parsed.name is None:
        raise ValueError("a component name is needed: 'name' or 'ws://host:port/name'")
    return parsed, parsed.name


def save_secret(name: str, key: PrivateKey) -> None:
    """Store the private key of ``name`` in ``<rembus dir>/<name>/.secret``."""
    path = keys.secret_path(name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    from rembus.security import crypto
    from rembus.security.file_security import write_atomically

    write_atomically(path, crypto.private_pem(key), 0o600)


async def register(url: str | None, pin: str, *, key_type: KeyType = "rsa",
                   **options: Any) -> None:
    """Register the component named in ``url`` with a new ``key_type`` key.

    ``url`` is ``"name"`` (broker at ``$REMBUS_BASE_URL``) or
    ``"ws://host:port/name"``; ``pin`` is the PIN of the name's tenant (the
    text after the first dot of the name, ``"."`` when there is none).
    Options are those of :func:`rembus.component` (``timeout=``,
    ``ssl_context=``...). Raises :class:`~rembus.errors.NameAlreadyTaken`
    when the name is registered already and :class:`~rembus.errors.RembusError`
    (status 10) for a wrong PIN or a tenant that is not enabled; the local key
    is written only after the broker accepted it.
    """
    parsed, name = _named(url)
    if not isinstance(pin, str):
        raise TypeError(f"pin must be a str, not {type(pin).__name__}")
    from rembus.security import crypto

    code = crypto.key_type_code(key_type)
    opts = make_options(options)
    private = crypto.generate_private_key(key_type)
    public = crypto.public_pem(private)
    conn = ClientConnection(None, opts.client_config())
    anonymous = ComponentURL(parsed.scheme, parsed.host, parsed.port, None)
    await _request(anonymous, opts, conn, "REGISTER",
                   lambda now: conn.register(name, pin, public, code, now=now))
    save_secret(name, private)


async def unregister(url: str | None, **options: Any) -> None:
    """Remove the registration of the component named in ``url``.

    Logs in with the component's key, sends UNREGISTER and, once the broker
    removed the key, deletes ``<rembus dir>/<name>/.secret``. Raises
    :class:`~rembus.errors.LoginFailed` if the login is refused and
    :class:`~rembus.errors.RembusError` if the broker refuses (e.g. the name
    is not registered: ``"invalid operation"``).
    """
    parsed, name = _named(url)
    opts = make_options(options)
    conn = ClientConnection(name, opts.client_config())
    await _request(parsed, opts, conn, "UNREGISTER", lambda now: conn.unregister(now=now))
    keys.secret_path(name).unlink(missing_ok=True)


async def _request(url: ComponentURL, options: Options, conn: ClientConnection, what: str,
                   send: Callable[[float], int]) -> None:
    """Connect, log in (signing the challenge of a named ``conn``), make one request with
    ``send(now)`` and raise unless the broker answered OK."""
    transport = await open_transport(url, options)
    try:
        await asyncio.wait_for(_exchange(transport, conn, send), options.timeout)
    except asyncio.TimeoutError:
        raise RembusTimeout(f"no answer to {what} within {options.timeout} s") from None
    finally:
        await transport.close()


async def _exchange(transport: Transport, conn: ClientConnection,
                    send: Callable[[float], int]) -> None:
    loop = asyncio.get_running_loop()
    conn.connect(loop.time())
    name = conn.name
    handle: int | None = None
    while True:
        for event in conn.events():
            if isinstance(event, ChallengeRequested) and name is not None:
                try:
                    signature = keys.sign(name, challenge_input(event.challenge, name))
                except keys.KeyNotFound as exc:
                    raise LoginFailed(str(exc)) from None
                conn.attest(signature, loop.time())
            elif isinstance(event, Connected):
                handle = send(loop.time())
            elif isinstance(event, LoginRefused):
                raise LoginFailed(event.reason, event.status)
            elif isinstance(event, RequestCompleted) and event.handle == handle:
                if event.status != 0:
                    raise error_for(event.status, event.data.value)
                return
            elif isinstance(event, RequestTimedOut) and event.handle == handle:
                raise asyncio.TimeoutError
            elif isinstance(event, RequestAborted) and event.handle == handle:
                raise RembusConnectionClosed(event.reason)
        transport.send(conn.data_to_send())
        try:
            frames = await transport.recv_many()
        except ConnectionError as exc:
            raise RembusConnectionClosed(f"the broker closed the connection: {exc}") from None
        now = loop.time()
        for frame in frames:
            conn.receive_message(frame, now)


def _run(coro: Coroutine[Any, Any, None], what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    coro.close()
    raise RuntimeError(f"{what}_sync() cannot run inside an event loop: await rembus.{what}()")


def register_sync(url: str | None, pin: str, *, key_type: KeyType = "rsa",
                  **options: Any) -> None:
    """Blocking :func:`register`."""
    _run(register(url, pin, key_type=key_type, **options), "register")


def unregister_sync(url: str | None, **options: Any) -> None:
    """Blocking :func:`unregister`."""
    _run(unregister(url, **options), "unregister")


__all__ = ["register", "register_sync", "save_secret", "unregister", "unregister_sync"]
