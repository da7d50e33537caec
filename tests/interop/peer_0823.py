"""Driver for PyPI ``rembus==0.8.23`` (8-byte ids, current admin commands), sync API.

Speaks the line protocol of :mod:`peer_common`; run it with the interpreter
of a virtualenv where ``rembus==0.8.23`` is installed.
"""

from __future__ import annotations

from typing import Any

from peer_common import Driver, method, serve, subscriber

import rembus
from rembus import protocol
from rembus.sync import Node


class Driver0823(Driver):
    def __init__(self) -> None:
        self.rb: Node | None = None

    def _rb(self) -> Node:
        if self.rb is None:
            raise ConnectionError("not connected")
        return self.rb

    def error_fields(self, exc: BaseException) -> dict[str, Any]:
        if isinstance(exc, protocol.RembusError):
            return {"status": exc.status, "message": exc.message}
        return {}

    def op_connect(self, url: str, authenticated: bool = False, json: bool = False) -> None:
        """``json``: speak the JSON dialect (text frames) instead of CBOR."""
        self.rb = Node(url, authenticated=authenticated,
                       enc=protocol.JSON if json else protocol.CBOR)

    def op_register(self, url: str, name: str, pin: str, scheme: str = "rsa") -> None:
        """Register ``name`` (on an anonymous connection of its own); keeps the private key."""
        signature = {"rsa": rembus.SIG_RSA, "ecdsa": rembus.SIG_ECDSA}[scheme]
        rembus.register(f"{url}/{name}", pin, signature)

    def op_unregister(self) -> None:
        self._rb().unregister()

    def op_close(self) -> None:
        rb, self.rb = self.rb, None
        if rb is not None:
            rb.close()

    def op_publish(self, topic: str, args: list[Any], qos: int = 0) -> None:
        flags = {0: rembus.QOS0, 1: rembus.QOS1, 2: rembus.QOS2}[qos]
        self._rb().publish(topic, *args, qos=flags)

    def op_rpc(self, topic: str, args: list[Any]) -> Any:
        return self._rb().rpc(topic, *args)

    def op_direct(self, target: str, topic: str, args: list[Any]) -> Any:
        return self._rb().direct(target, topic, *args)

    def op_subscribe(self, topic: str, retroactive: bool = False) -> None:
        msg_from = rembus.LastReceived if retroactive else rembus.Now
        self._rb().subscribe(subscriber(topic), msg_from, topic)

    def op_expose(self, topic: str, kind: str) -> None:
        self._rb().expose(method(topic, kind), topic)


if __name__ == "__main__":
    serve(Driver0823(), rembus.__version__)
