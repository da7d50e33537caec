"""What the component of every driver shares: identity, handlers, requests to the core.

A driver subclass supplies the clock (:meth:`ComponentBase._now`) and the
waiting: the methods here only update the registry and the protocol core and
return the handle of the request to wait for (``None``: nothing to wait for).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from rembus.client.handlers import (
    Calls,
    Handler,
    Outcome,
    Registry,
    check_handler,
    check_qos,
    check_timeout,
    check_topic,
    request_outcome,
    topic_of,
    wire_args,
)
from rembus.client.held import HeldMessages
from rembus.client.options import Options
from rembus.client.url import ComponentURL
from rembus.errors import RembusConnectionClosed, RembusError, RembusTimeout
from rembus_proto import LAST_RECEIVED, NOW, ClientConnection, Payload
from rembus_proto.client_config import ConnectionState, NotConnected, OutboxFull, TooManyPending
from rembus_proto.client_events import PublicationReceived

log = logging.getLogger("rembus")


class ComponentBase:
    """The driver-independent half of a component."""

    def __init__(self, url: ComponentURL, options: Options) -> None:
        self.url = url
        self.options = options
        self.conn = ClientConnection(url.name, options.client_config(), meta=options.meta)
        self.registry = Registry()
        self._held = HeldMessages(options.max_held_messages)
        #: Publications of this component dropped by ``close()``: not sent, or not acknowledged.
        self.dropped_at_close = 0
        self._calls: Calls = {}
        self._closing = False
        self._explicit_unreactive = False

    def _failover(self) -> None:
        """Connecting to the current broker failed: the next one of the list is tried next."""
        following = self.url.next()
        if following is not self.url:
            log.info("%s: unreachable, trying %s next", self.url.endpoint, following.endpoint)
            self.url = following

    @property
    def name(self) -> str | None:
        """The component name (``None`` when anonymous)."""
        return self.url.name

    @property
    def is_connected(self) -> bool:
        """True while the connection to the broker is up and logged in."""
        return self.conn.state is ConnectionState.OPEN

    @property
    def dropped_messages(self) -> int:
        """Messages dropped (and logged): a payload that could not be decoded, or a
        message for a topic without a handler beyond ``Options.max_held_messages`` or
        still waiting for its handler at ``close()``."""
        return self.registry.dropped

    def _now(self) -> float:
        raise NotImplementedError

    def _on_publication(self, event: PublicationReceived) -> None:
        """Run the subscriber of a publication (the driver's hook)."""
        raise NotImplementedError

    # -- delivery --------------------------------------------------------------

    def _publication_call(self, event: PublicationReceived
                          ) -> tuple[Handler, tuple[Any, ...]] | None:
        """The subscriber of ``event`` and its arguments; ``None``: nothing to call now.

        A message for a topic without a handler is held (un-acknowledged) for
        the ``subscribe`` that registers its topic; one with a bad payload is
        dropped, logged, counted and acknowledged (a resend would not be better).
        """
        handler = self.registry.subscribers.get(event.topic)
        if handler is None:
            if not self._held.hold(event):
                self._drop_unhandled([event], "more than Options.max_held_messages wait "
                                              "for a handler")
            return None
        args = self.registry.call_args(event.data, self.options.dataframe, event.topic)
        if args is None:
            self._delivered(event)
            return None
        return handler, args

    def _delivered(self, event: PublicationReceived) -> None:
        """The handler of ``event`` returned or raised: acknowledge it (QoS1/QoS2)."""
        if event.msg_id is not None:
            self.conn.acknowledge(event.msg_id)

    def _deliver_held(self, topic: str) -> None:
        """Hand the messages held for ``topic`` to its newly registered handler, in order."""
        for event in self._held.take(topic):
            self._on_publication(event)

    def _drop_held(self) -> None:
        """The component closes: drop (log, count) the messages still waiting for a handler."""
        if len(self._held):
            self._drop_unhandled(self._held.take_all(), "the component closed")

    def _undelivered(self) -> int:
        """Publications not yet written (outbox) or not yet acknowledged by the broker."""
        return self.conn.unacked_count + self.conn.outbox_len

    def _close_core(self) -> None:
        """Close the protocol core: drop (log, count) what was not delivered."""
        self._drop_held()
        dropped = self.conn.close()
        if dropped:
            log.warning("%s: closed with %d publication(s) not delivered to the broker "
                        "(dropped)", self.url, dropped)
        self.dropped_at_close += dropped

    def _drop_unhandled(self, events: Iterable[PublicationReceived], why: str) -> None:
        count = 0
        topics: dict[str, None] = {}
        for event in events:
            count += 1
            topics[event.topic] = None
            if event.msg_id is not None:
                self.conn.release(event.msg_id)
        self.registry.dropped += count
        log.warning("%s: dropped %d message(s) for topic(s) without a handler (%s): %s; "
                    "the broker sends QoS1/QoS2 ones again later", self.url, count, why,
                    ", ".join(topics))

    def _outcome(self, event: object) -> Outcome | None:
        """The outcome ``event`` reports for a request or QoS publication, else ``None``."""
        return request_outcome(event, self.options.dataframe, self._calls, self.options.timeout)

    def _publish_timeout(self, topic: str) -> RembusTimeout:
        """The error of a QoS publication not acknowledged within ``Options.timeout``."""
        return RembusTimeout(
            f"publish {topic!r}: no ACK within {self.options.timeout:g} s; the publication "
            f"stays queued and is sent again when the connection allows")

    def _check_handler(self, fn: Any, what: str) -> None:
        check_handler(fn, what)

    def _check_open_for_use(self) -> None:
        if self._closing:
            raise RembusConnectionClosed("the component is closed")

    def _wants_reactive(self) -> bool:
        """Whether subscribing should turn delivery on (not paused by the application)."""
        return not self._explicit_unreactive and not self.conn.is_reactive

    def _publish_handle(self, topic: str, args: tuple[Any, ...] | Payload,
                        qos: int) -> int | None:
        check_topic(topic, "publish")
        check_qos(qos)
        self._check_open_for_use()
        data = args if isinstance(args, Payload) else wire_args(args)
        try:
            return self.conn.publish(topic, data, qos=qos, now=self._now())
        except (OutboxFull, TooManyPending) as exc:
            raise RembusError(str(exc)) from None

    def _rpc_handle(self, method: str, args: tuple[Any, ...], target: str | None,
                    timeout: float | None) -> int:
        what = "rpc" if target is None else "direct"
        if target is not None and (not isinstance(target, str) or not target):
            raise TypeError(f"the target must be a component name (a non-empty str), not "
                            f"{target!r} (direct(target, method, *args) takes the target "
                            f"first)")
        check_topic(method, what)
        check_timeout(timeout, what)
        self._check_open_for_use()
        try:
            handle = self.conn.rpc(method, wire_args(args), target=target, now=self._now(),
                                   timeout=timeout)
        except NotConnected:
            raise RembusConnectionClosed(f"not connected to {self.url.endpoint}") from None
        except TooManyPending as exc:
            raise RembusError(str(exc)) from None
        self._calls[handle] = (f"{what} {method!r}",
                               self.options.timeout if timeout is None else timeout)
        return handle

    def _subscribe_handle(self, fn: Handler, retroactive: bool, topic: str | None) -> int | None:
        self._check_handler(fn, "subscribe")
        name = topic_of(fn, topic, "subscribe")
        self.registry.subscribers[name] = fn
        msg_from = LAST_RECEIVED if retroactive else NOW
        handle = self.conn.subscribe(name, msg_from=msg_from, now=self._now())
        self._deliver_held(name)
        return handle

    def _unsubscribe_handle(self, fn_or_topic: Handler | str) -> int | None:
        name = topic_of(fn_or_topic, None, "unsubscribe")
        self.registry.subscribers.pop(name, None)
        return self.conn.unsubscribe(name, now=self._now())

    def _expose_handle(self, fn: Handler, topic: str | None) -> int | None:
        self._check_handler(fn, "expose")
        name = topic_of(fn, topic, "expose")
        self.registry.exposed[name] = fn
        return self.conn.expose(name, now=self._now())

    def _unexpose_handle(self, fn_or_topic: Handler | str) -> int | None:
        name = topic_of(fn_or_topic, None, "unexpose")
        self.registry.exposed.pop(name, None)
        return self.conn.unexpose(name, now=self._now())

    def _admin_handle(self, topic: str, command: dict[str, Any]) -> int:
        check_topic(topic, "admin")
        if not isinstance(command, dict) or not isinstance(command.get("cmd"), str):
            raise TypeError('an admin command is a dict with a "cmd" string, '
                            'e.g. {"cmd": "private_topic"}')
        self._check_open_for_use()
        try:
            return self.conn.admin(topic, command, now=self._now())
        except NotConnected:
            raise RembusConnectionClosed(f"not connected to {self.url.endpoint}") from None

    def _reactive_handle(self, on: bool) -> int | None:
        self._explicit_unreactive = not on
        return self.conn.reactive(on, now=self._now())
