"""Requests of the client machine: RPC, admin commands, the recorded intent, answers."""

from __future__ import annotations

from typing import Any

from .client_config import NotConnected, TooManyPending
from .client_events import RequestReceived
from .client_state import (
    _OPEN,
    _USER,
    _Args,
    _args_error,
    _BytesLike,
    _check_msg_from,
    _check_timeout,
    _check_topic,
    _ClientState,
    _Request,
    _topic_error,
    _type_name,
)
from .constants import CONFIG_TOPIC, NOW, Status
from .messages import Admin, Register, Response, Rpc, Unregister
from .payload import NO_DATA, Payload


class _Requests(_ClientState):
    """Requests to the broker and answers to the requests it forwards."""

    def _check_can_request(self) -> None:
        if self._state is not _OPEN:
            raise NotConnected(f"cannot send a request in state {self._state.name}; "
                               f"wait for the Connected event")
        if len(self._requests) >= self._config.max_pending_requests:
            raise TooManyPending(f"{len(self._requests)} requests are already waiting for an "
                                 f"answer (ClientConfig.max_pending_requests)")

    def _track(self, msg_id: bytes, frame: bytes, deadline: float, topic: str, cmd: str) -> int:
        handle = next(self._handles)
        rec = _Request(msg_id, handle, deadline, _USER, topic, cmd)
        self._requests[msg_id] = rec
        self._push(deadline, rec)
        self._out.append(frame)
        return handle

    def _user_admin(self, topic: str, command: dict[str, Any], now: float) -> int:
        self._check_can_request()
        msg_id = self._new_id()
        frame = Admin(msg_id, topic, command).encode()
        return self._track(msg_id, frame, now + self._config.request_timeout, topic,
                           str(command.get("cmd")))

    @staticmethod
    def _reactive_command(on: bool, msg_from: float | None) -> dict[str, Any]:
        command: dict[str, Any] = {"cmd": "reactive", "status": on}
        if msg_from is not None:
            command["msg_from"] = msg_from
        return command

    def rpc(self, topic: str, args: _Args, *,
            target: str | None = None, now: float, timeout: float | None = None) -> int:
        """Call ``topic`` with positional ``args``; return the request handle.

        ``target`` names the component for a direct call (``None``: the broker
        picks an exposer). ``timeout`` overrides ``ClientConfig.request_timeout``.
        Raises ``NotConnected`` unless OPEN, ``TooManyPending`` beyond
        ``max_pending_requests``, ``EncodeError`` for unencodable args.
        """
        if type(topic) is not str:
            raise _topic_error(topic)
        if target is not None and type(target) is not str:
            raise TypeError(f"target must be a component name (str) or None, "
                            f"not {_type_name(target)}")
        if isinstance(args, Payload):
            data = args
        elif isinstance(args, (tuple, list)):
            data = Payload.of_args(args)
        else:
            raise _args_error(args)
        wait = self._config.request_timeout if timeout is None else _check_timeout(timeout)
        self._check_can_request()
        msg_id = self._new_id()
        frame = Rpc(msg_id, topic, data, target).encode()
        return self._track(msg_id, frame, now + wait, topic, "rpc")

    def admin(self, topic: str, command: dict[str, Any], *, now: float) -> int:
        """Send a generic admin command ``[3, id, topic, command]``; return its handle.

        ``command`` is a map with a text ``"cmd"`` key. Nothing is recorded for
        restore: use ``subscribe``/``expose``/``reactive`` for that.
        """
        _check_topic(topic)
        if not isinstance(command, dict) or not isinstance(command.get("cmd"), str):
            raise ValueError('command must be a dict with a text "cmd" key, '
                             'e.g. {"cmd": "broker_config"}')
        return self._user_admin(topic, command, now)

    def subscribe(self, topic: str, *, msg_from: float = NOW, now: float) -> int | None:
        """Subscribe to ``topic``; ``msg_from`` is NOW, LAST_RECEIVED or a window in ns.

        Recorded and re-sent after every connect. Returns the request handle
        when OPEN, else ``None`` (it is sent on the next connect).
        """
        _check_topic(topic)
        _check_msg_from(msg_from)
        handle = None
        if self._state is _OPEN:
            handle = self._user_admin(topic, {"cmd": "subscribe", "msg_from": msg_from}, now)
        self._subscriptions[topic] = msg_from
        self._removals.pop(("unsubscribe", topic), None)
        return handle

    def unsubscribe(self, topic: str, *, now: float) -> int | None:
        """Stop the subscription to ``topic``; a handle when OPEN, else ``None``.

        When not OPEN a named component sends the unsubscribe on the next
        connect (the broker remembers a named component's subscriptions).
        """
        return self._remove(topic, "unsubscribe", self._subscriptions, now)

    def expose(self, topic: str, *, now: float) -> int | None:
        """Expose the RPC method ``topic``; a handle when OPEN, else ``None``.

        Recorded and re-sent after every connect. Incoming requests for it
        become ``RequestReceived`` events; others are answered with 42.
        """
        _check_topic(topic)
        handle = None
        if self._state is _OPEN:
            handle = self._user_admin(topic, {"cmd": "expose"}, now)
        self._exposed[topic] = None
        self._removals.pop(("unexpose", topic), None)
        return handle

    def unexpose(self, topic: str, *, now: float) -> int | None:
        """Stop exposing ``topic``; a handle when OPEN, else ``None`` (as ``unsubscribe``)."""
        return self._remove(topic, "unexpose", self._exposed, now)

    def _remove(self, topic: str, cmd: str, record: dict[str, Any], now: float) -> int | None:
        _check_topic(topic)
        handle = None
        if self._state is _OPEN:
            handle = self._user_admin(topic, {"cmd": cmd}, now)
        elif self._name is not None:
            self._removals[(cmd, topic)] = None
        record.pop(topic, None)
        return handle

    def reactive(self, on: bool, *, msg_from: float | None = None, now: float) -> int | None:
        """Turn delivery of publications on or off (admin ``reactive`` on ``__config__``).

        ``msg_from`` (ns), when given, is sent along: Julia brokers replay
        stored messages only within that window. Recorded and re-sent after
        every connect when on. A handle when OPEN, else ``None``.
        """
        if type(on) is not bool:
            raise TypeError(f"on must be True or False, not {_type_name(on)}")
        if msg_from is not None:
            _check_msg_from(msg_from)
        handle = None
        if self._state is _OPEN:
            handle = self._user_admin(CONFIG_TOPIC, self._reactive_command(on, msg_from), now)
        self._reactive = on
        self._reactive_from = msg_from
        return handle

    def respond(self, request_id: bytes, status: int = Status.OK, value: Any = None) -> None:
        """Answer the incoming request ``request_id`` of a ``RequestReceived`` event.

        ``value`` is the result (status 0) or the error reason; a ``Payload``
        is sent as is. A request received on an earlier connection, or already
        answered, is silently dropped: the broker no longer waits for it.
        """
        if type(request_id) is not bytes:
            raise TypeError(f"request_id must be the bytes of RequestReceived.request_id, "
                            f"not {_type_name(request_id)}")
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status must be an int (see Status), not {_type_name(status)}")
        if isinstance(value, Payload):
            data = value
        else:
            data = NO_DATA if value is None else Payload.of(value)
        frame = Response(request_id, status, data).encode()
        incoming = self._incoming
        if request_id in incoming:
            del incoming[request_id]
            self._out.append(frame)

    def register(self, name: str, pin: str, pubkey: _BytesLike, keytype: int, *,
                 now: float) -> int:
        """Register ``pubkey`` for ``name`` (REGISTER ``[10, id, name, pin, pubkey, keytype]``).

        ``keytype`` is 1 for RSA, 2 for ECDSA. Send it on an anonymous
        connection: Julia brokers ignore it on a named one. While it waits for
        its answer, the unsolicited challenge of a broker in authenticated mode
        is ignored (registering needs no login). Returns a handle.
        """
        if type(name) is not str:
            raise TypeError(f"name must be a str, not {_type_name(name)}")
        if not name:
            raise ValueError("name must not be empty")
        if type(pin) is not str:
            raise TypeError(f"pin must be a str, not {_type_name(pin)}")
        if not isinstance(pubkey, (bytes, bytearray, memoryview)):
            raise TypeError(f"pubkey must be bytes (PEM or DER), not {_type_name(pubkey)}")
        if type(keytype) is not int:
            raise TypeError(f"keytype must be the int 1 (RSA) or 2 (ECDSA), not "
                            f"{_type_name(keytype)}")
        if keytype not in (1, 2):
            raise ValueError(f"keytype must be 1 (RSA) or 2 (ECDSA), not {keytype!r}")
        self._check_can_request()
        msg_id = self._new_id()
        frame = Register(msg_id, name, pin, bytes(pubkey), keytype).encode()
        return self._track(msg_id, frame, now + self._config.request_timeout, name, "register")

    def unregister(self, *, now: float) -> int:
        """Drop the registered key of this (authenticated) component; returns a handle."""
        self._check_can_request()
        msg_id = self._new_id()
        return self._track(msg_id, Unregister(msg_id).encode(),
                           now + self._config.request_timeout, self._name or "", "unregister")

    def _on_rpc(self, msg: Rpc) -> None:
        topic = msg.topic
        if topic not in self._exposed:
            self._out.append(
                Response(msg.id, Status.METHOD_NOT_FOUND, Payload.of(topic)).encode())
            return
        incoming = self._incoming
        if len(incoming) >= self._config.max_pending_requests:
            self._out.append(Response(msg.id, Status.GENERIC_ERROR,
                                      Payload.of("too many requests in progress")).encode())
            return
        incoming[msg.id] = None
        self._events.append(RequestReceived(msg.id, topic, msg.data, msg.target))
