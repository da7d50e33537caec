"""Driver for PyPI ``rembus==0.1.0`` (16-byte ids, ``add_interest``/``add_impl``), sync API.

Speaks the line protocol of :mod:`peer_common`; run it with the interpreter
of a virtualenv where ``rembus==0.1.0`` is installed.

Upstream 0.1.0 bugs worked around here, in the harness only:

* ``rembus.sync.Rembus.send_wait`` sends the request and then waits on a
  ``threading.Condition`` without having held its lock across the send. A
  reply that arrives before ``wait()`` starts (immediate on a local broker)
  notifies nobody; when the 3 s timer fires it finds the result where it
  expects the condition, dies with ``TypeError``, and the caller blocks
  forever. :class:`Rembus010` holds the lock from before the send and waits
  for the result with a bounded ``wait_for``.
* The same method returns error replies (``RembusError``, ``RembusTimeout``,
  ``RembusConnectionClosed`` instances) instead of raising them; we raise.
* ``Rembus.connect`` swallows ``ConnectionRefusedError`` (it returns an
  unconnected object) and turns a failed login into ``RembusError("login
  failed")``, whose ``str()`` raises ``KeyError``; we check the socket and
  report errors by type and status only.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from peer_common import Driver, method, serve, subscriber

from rembus import common
from rembus import sync as rsync

REQUEST_TIMEOUT = float(common.request_timeout())  # the 0.1.0 default: 3 s


class Rembus010(rsync.Rembus):
    """The 0.1.0 sync client with a request wait that cannot lose its reply."""

    def send_wait(self, builder: Any) -> Any:
        reqid = common.id()
        cond = threading.Condition()
        with cond:
            self.outreq[reqid] = cond
            self.ws.send(builder(reqid))
            # the receiver thread replaces the condition by the result, then notifies
            answered = cond.wait_for(
                lambda: reqid in self.outreq and self.outreq[reqid] is not cond,
                timeout=REQUEST_TIMEOUT)
        result = self.outreq.pop(reqid, None)
        if not answered:
            raise common.RembusTimeout()
        if isinstance(result, Exception):
            raise result
        return result


class Driver010(Driver):
    def __init__(self) -> None:
        self.rb: Rembus010 | None = None

    def _rb(self) -> Rembus010:
        if self.rb is None or self.rb.ws is None:
            raise ConnectionError("not connected")
        return self.rb

    def error_fields(self, exc: BaseException) -> dict[str, Any]:
        if isinstance(exc, common.RembusError):
            return {"status": exc.status if isinstance(exc.status, int) else None,
                    "message": exc.message}
        return {}

    def op_connect(self, url: str) -> None:
        rb = Rembus010(url)
        rb.connect()
        if rb.ws is None:
            raise ConnectionError(f"cannot connect to {url}")
        self.rb = rb

    def op_install_key(self, name: str, pem: str) -> None:
        """Store a private key where 0.1.0 looks for the key of ``name`` (it cannot register)."""
        folder = common.config_dir()
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as key_file:
            key_file.write(pem)

    def op_close(self) -> None:
        rb, self.rb = self.rb, None
        if rb is not None:
            rb.close()
            if rb.receiver is not None:
                rb.receiver.join(10)

    def op_publish(self, topic: str, args: list[Any], qos: int = 0) -> None:
        if qos:
            raise ValueError("0.1.0 publishes with QoS0 only")
        self._rb().publish(topic, *args)

    def op_rpc(self, topic: str, args: list[Any]) -> Any:
        return self._rb().rpc(topic, *args)

    def op_direct(self, target: str, topic: str, args: list[Any]) -> Any:
        return self._rb().direct(target, topic, *args)

    def op_subscribe(self, topic: str, retroactive: bool = False) -> None:
        self._rb().subscribe(subscriber(topic), retroactive)

    def op_expose(self, topic: str, kind: str) -> None:
        self._rb().expose(method(topic, kind))


if __name__ == "__main__":
    import rembus

    serve(Driver010(), rembus.version)
