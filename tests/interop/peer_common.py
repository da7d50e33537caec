"""The line protocol of the upstream peer drivers (runs inside the upstream virtualenvs).

A driver is started as ``python peer_XXX.py`` with the interpreter of an
upstream ``rembus`` release. It reads one JSON command per stdin line::

    {"id": 1, "op": "connect", "url": "ws://127.0.0.1:8000/name"}

and answers each with one stdout line::

    {"id": 1, "ok": true, "result": ...}
    {"id": 1, "ok": false, "error": "RembusError", "status": 42, "message": "..."}

Lines without an ``id`` are events: ``{"event": "ready", "version": ...}``
first, then ``{"event": "pub", "topic": ..., "args": [...]}`` for every
message a subscription receives and ``{"event": "call", "topic": ...,
"args": [...]}`` for every call an exposed method serves. End of input
closes the component and exits.

Ops: connect(url), close, publish(topic, args[, qos]), rpc(topic, args),
direct(target, topic, args), subscribe(topic[, retroactive]),
unsubscribe(topic), expose(topic, kind), unexpose(topic), reactive,
unreactive; 0.8.23 also register(url, name, pin[, scheme]), unregister and
connect(url, authenticated); 0.1.0 also install_key(name, pem). Exposed
``kind``: ``add`` (sum of the arguments), ``echo`` (the arguments, a single
one unwrapped), ``fail`` (raises "kaboom").

This module must only use the standard library: it is imported by drivers
running with old and new upstream releases.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

_out_lock = threading.Lock()
log = logging.getLogger("driver")


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON line to stdout (thread-safe)."""
    line = json.dumps(obj, default=repr)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _plain(value: Any) -> Any:
    """Values as JSON can carry them (tuples to lists, a DataFrame to its columns)."""
    if type(value).__name__ == "DataFrame":  # pandas or polars
        return {"DataFrame": {str(c): _plain(value[c].to_list()) for c in value.columns}}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # some upstream exceptions cannot print themselves
        return repr(exc.args)


def subscriber(topic: str) -> Callable[..., None]:
    """A handler that reports every message of ``topic``."""

    def handler(*args: Any) -> None:
        emit({"event": "pub", "topic": topic, "args": _plain(list(args))})

    handler.__name__ = topic
    return handler


def method(topic: str, kind: str) -> Callable[..., Any]:
    """An exposed method of the given kind, reporting each call."""

    def handler(*args: Any) -> Any:
        emit({"event": "call", "topic": topic, "args": _plain(list(args))})
        if kind == "add":
            return sum(args)
        if kind == "echo":
            return args[0] if len(args) == 1 else list(args)
        if kind == "fail":
            raise ValueError("kaboom")
        if kind == "frames":  # a DataFrame nested in the result
            import pandas

            return [pandas.DataFrame({"a": [1, 2]}), "text"]
        raise ValueError(f"unknown kind {kind}")

    handler.__name__ = topic
    return handler


class Driver:
    """Base of the drivers: ``op_<name>`` methods implement the ops and raise on failure."""

    def _rb(self) -> Any:
        """The connected upstream component; raises ConnectionError if there is none."""
        raise NotImplementedError

    def op_close(self) -> None:
        raise NotImplementedError

    # Ops both generations spell the same way.

    def op_unsubscribe(self, topic: str) -> None:
        self._rb().unsubscribe(topic)

    def op_unexpose(self, topic: str) -> None:
        self._rb().unexpose(topic)

    def op_reactive(self) -> None:
        self._rb().reactive()

    def op_unreactive(self) -> None:
        self._rb().unreactive()

    def error_fields(self, exc: BaseException) -> dict[str, Any]:
        """Extra fields describing an upstream error (status code, message)."""
        return {}


def serve(driver: Driver, version: str) -> None:
    """Run the command loop until stdin closes."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emit({"event": "ready", "version": version})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            req_id = command.pop("id")
            op = command.pop("op")
            log.info("%s %s", op, json.dumps(command)[:200])  # for the stderr tail of failures
            try:
                result = getattr(driver, "op_" + op)(**command)
            except Exception as exc:  # reported to the test, which decides
                traceback.print_exc(file=sys.stderr)
                emit({"id": req_id, "ok": False, "error": type(exc).__name__,
                      "text": _describe(exc), **driver.error_fields(exc)})
            else:
                emit({"id": req_id, "ok": True, "result": _plain(result)})
    finally:
        try:
            driver.op_close()
        except Exception:
            traceback.print_exc(file=sys.stderr)
