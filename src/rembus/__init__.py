"""Rembus for Python: Pub/Sub and RPC over WebSocket and CBOR.

The async API::

    import rembus

    async def main() -> None:
        rb = await rembus.component("ws://127.0.0.1:8000/myname")
        await rb.publish("temperature", 21.5)
        await rb.forever()  # until Ctrl-C

    rembus.run(main())  # closes the components at the end, quiet on Ctrl-C

``import rembus.sync as rembus`` gives the same API with blocking calls.
"""

from rembus.client.aio import Component, component
from rembus.client.lifetime import run
from rembus.client.options import Options
from rembus.errors import (
    LoginFailed,
    MethodException,
    MethodLoopback,
    MethodNotFound,
    MethodUnavailable,
    NameAlreadyTaken,
    RembusConnectionClosed,
    RembusError,
    RembusTimeout,
    TargetDown,
    TargetNotFound,
    UnknownCommand,
)
from rembus.security.registration import register, unregister
from rembus.version import __version__

__all__ = [
    "Component",
    "LoginFailed",
    "MethodException",
    "MethodLoopback",
    "MethodNotFound",
    "MethodUnavailable",
    "NameAlreadyTaken",
    "Options",
    "RembusConnectionClosed",
    "RembusError",
    "RembusTimeout",
    "TargetDown",
    "TargetNotFound",
    "UnknownCommand",
    "__version__",
    "component",
    "register",
    "run",
    "unregister",
]
