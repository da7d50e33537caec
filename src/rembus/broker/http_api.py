"""The broker's HTTP API (Rembus.jl's), driven on the asyncio server's connections.

Routes and rules are in :mod:`rembus_proto.broker.http_routes`. Each request
becomes an :class:`Exchange`: a connection of its own to the router, logged
in as the request's user, that sends one PUB, RPC or ADMIN message and waits
for the answer (at most the router's ``call_timeout``, then 504). The HTTP
connection stays open until then; a client that leaves early only makes the
answer go nowhere. The exchange's connection is disconnected once answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from rembus_proto.broker import Connection, Router
from rembus_proto.broker import http_routes as routes
from rembus_proto.broker.http_routes import HttpAnswer, Login, Route
from rembus_proto.errors import EncodeError, ProtocolError
from rembus_proto.messages import Identity, Response, decode
from rembus_proto.security_port import Security
from rembus_proto.wsevents import HttpRequest

log = logging.getLogger("rembus.broker")

class Passwords(Protocol):
    """The HTTP API's Basic passwords (:class:`rembus.broker.http_passwords.HttpPasswords`)."""

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is the one set for ``name``."""

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` has a password."""


class Broker(Protocol):
    """What the API uses of the broker."""

    router: Router
    security: Security

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop."""

    def schedule_flush(self) -> None:
        """Run the router's output at the end of this event-loop turn."""


class Responder(Protocol):
    """The HTTP connection a request came on."""

    def reply_http(self, status: int, content_type: str, body: bytes,
                   headers: tuple[tuple[str, str], ...]) -> None:
        """Send the response; the connection then closes."""


class HttpApi:
    """The API of one broker: starts exchanges and hands them the router's output."""

    def __init__(self, broker: Broker, passwords: Passwords | None = None) -> None:
        self.broker = broker
        self.passwords = passwords
        self.exchanges: dict[Connection, Exchange] = {}
        self.stopped = False

    def handle(self, responder: Responder, request: HttpRequest, peer: str = "") -> bool:
        """Serve ``request`` if it is for the API (else ``False``: the caller answers 404);
        ``peer`` names the client in logs."""
        router = self.broker.router
        route = routes.parse_route(request.method, request.target, request.body,
                                   router.config.names)
        if route is None:
            return False
        if isinstance(route, HttpAnswer):
            _reply(responder, route)
            return True
        credentials = routes.parse_credentials(request.headers)
        if isinstance(credentials, HttpAnswer):
            _reply(responder, credentials)
            return True
        passwords = self.passwords
        if credentials is not None and credentials.password and passwords is not None:
            # the key derivation is slow on purpose: not on the event loop
            checked = self.broker.loop.run_in_executor(
                None, passwords.verify, credentials.user, credentials.password)
            checked.add_done_callback(
                lambda done: self._go_on(responder, route, credentials, peer,
                                         not done.cancelled() and done.exception() is None
                                         and done.result()))
        else:
            self._go_on(responder, route, credentials, peer, False)
        return True

    def _go_on(self, responder: Responder, route: Route,
               credentials: routes.Credentials | None, peer: str, password_ok: bool) -> None:
        """Carry out ``route`` once the password (if any) is checked."""
        if self.stopped:
            _reply(responder, routes.problem(503, "the broker is stopping"))
            return
        login = routes.decide_login(route, credentials, self._checks(password_ok))
        if isinstance(login, HttpAnswer):
            _reply(responder, login)
            return
        try:
            frame = routes.request_frame(route)
        except EncodeError as exc:
            _reply(responder, routes.problem(400, f"the arguments cannot be sent: {exc}"))
            return
        Exchange(self, responder, route, login, frame, peer).start()

    def _checks(self, password_ok: bool) -> routes.Checks:
        broker = self.broker
        security = broker.security
        passwords = self.passwords
        return routes.Checks(
            authenticated=broker.router.config.authenticated,
            password_ok=lambda name, password: password_ok,
            protected=lambda name: ((passwords is not None and name in passwords)
                                    or security.public_key(name) is not None),
            is_admin=security.is_admin,
        )

    def send(self, conn: Connection, frames: list[bytes]) -> bool:
        """Frames from the router; ``False`` when ``conn`` is not an exchange's."""
        exchange = self.exchanges.get(conn)
        if exchange is None:
            return False
        exchange.received(frames)
        return True

    def stop(self) -> None:
        """The broker stops: requests still waiting get 503."""
        self.stopped = True
        for exchange in list(self.exchanges.values()):
            exchange.finish(routes.problem(503, "the broker is stopping"))

    def closed(self, conn: Connection, reason: str) -> bool:
        """The router closes ``conn``; ``False`` when it is not an exchange's."""
        exchange = self.exchanges.get(conn)
        if exchange is None:
            return False
        exchange.finish(routes.problem(403, f"refused: {reason}"))
        return True


def _reply(responder: Responder, answer: HttpAnswer) -> None:
    responder.reply_http(answer.status, answer.content_type, answer.body, answer.headers)


class Exchange:
    """One request carried out as a connection to the router."""

    def __init__(self, api: HttpApi, responder: Responder, route: Route, login: Login,
                 frame: bytes, peer: str = "") -> None:
        self.api = api
        self.peer = peer
        self.responder = responder
        self.route = route
        self.login = login
        self.frame = frame
        self.conn: Connection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sent = False

    def start(self) -> None:
        """Connect to the router, log in, and send the request (or wait for the login)."""
        broker = self.api.broker
        router = broker.router
        now = time.monotonic()
        conn = self.conn = router.connect(now, f"HTTP {self.peer}")
        self.api.exchanges[conn] = self
        self._timer = broker.loop.call_later(router.config.call_timeout, self._expired)
        name = self.login.name
        if name is None:
            self._send_request()
        elif self.login.vouched:
            router.vouch(conn, routes.LOGIN_ID, name, now)
        else:
            self._feed(Identity(routes.LOGIN_ID, name).encode())
        broker.schedule_flush()

    def _feed(self, frame: bytes) -> None:
        conn = self.conn
        assert conn is not None
        try:
            self.api.broker.router.receive(conn, frame, time.monotonic(), time.time())
        except ProtocolError as exc:
            self.finish(routes.problem(400, str(exc)))
        self.api.broker.schedule_flush()

    def _send_request(self) -> None:
        self._sent = True
        self._feed(self.frame)
        if self.conn is not None and not routes.waits_for_answer(self.route):
            self.finish(HttpAnswer(200))

    def received(self, frames: list[bytes]) -> None:
        """Messages the router sent to this exchange's connection."""
        for frame in frames:
            if self.conn is None:
                return
            try:
                message = decode(frame)
            except ProtocolError:
                continue
            if not isinstance(message, Response):
                continue  # e.g. the challenge an authenticated broker sends everyone
            if message.id == routes.LOGIN_ID and not self._sent:
                if routes.is_ok(message):
                    self._send_request()
                else:
                    self.finish(routes.login_failed(message))
            elif message.id == routes.REQUEST_ID and self._sent:
                self.finish(routes.answer(self.route, message))

    def _expired(self) -> None:
        self._timer = None
        timeout = self.api.broker.router.config.call_timeout
        self.finish(routes.problem(504, f"no answer within {timeout:g} s"))

    def finish(self, answer: HttpAnswer) -> None:
        """Answer the HTTP request and disconnect from the router (once)."""
        conn = self.conn
        if conn is None:
            return
        self.conn = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        api = self.api
        del api.exchanges[conn]
        api.broker.router.disconnect(conn, time.monotonic())
        api.broker.schedule_flush()
        log.debug("%s: HTTP %s %s -> %d", self.peer, self.route.kind,
                  self.route.topic, answer.status)
        _reply(self.responder, answer)


__all__ = ["Broker", "Exchange", "HttpApi", "Passwords", "Responder"]
