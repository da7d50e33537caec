"""The broker's HTTP API, sans-IO: routes, credentials, who acts, the messages, the answers.

The API is the one of Rembus.jl brokers, on the broker's own port:

=======  ================================  ==========================================
method   path                              does
=======  ================================  ==========================================
POST     ``/{topic}``                      publish; the JSON array body is the arguments
GET      ``/{method}``                     RPC; the JSON array body is the arguments
POST     ``/rpc/{method}``                 the same RPC, for clients that send no GET body
GET      ``/admin/{cmd}``                  a broker command (admins only)
POST     ``/subscribe/{topic}/{cid}``      ``cid`` subscribes to ``topic`` (also
                                           ``unsubscribe``, ``expose``, ``unexpose``)
POST     ``/private_topic/{topic}``        make ``topic`` private (also ``public_topic``;
                                           admins only)
POST     ``/authorize/{cid}/{topic}``      authorize ``cid`` on a private topic (also
                                           ``unauthorize``; admins only)
=======  ================================  ==========================================

A request is carried out as a connection of its own to the router, which
applies the same rules as to a WebSocket component: the driver logs it in
(:class:`Login`), sends the message :func:`request_frame` builds, and turns
the router's RESPONSE into HTTP with :func:`answer`. Nothing here does I/O;
password, key and admin look-ups are callables given by the driver.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from ..constants import CONFIG_TOPIC, Status
from ..errors import EncodeError, ProtocolError
from ..jsonrpc import jsonable
from ..messages import Admin, Pub, Response, Rpc
from ..payload import Payload
from ..topics import DEFAULT_NAME_LIMITS, NameLimits, check_name, check_topic, normalize_name

Kind = Literal["publish", "rpc", "admin", "component", "security"]

#: Broker commands ``GET /admin/{cmd}`` runs.
ADMIN_COMMANDS = frozenset({"broker_config", "load_config", "save_config", "shutdown",
                            "private_topics_config", "topics_config"})
#: ``POST /{cmd}/{topic}/{cid}``: the routing table of a component.
COMPONENT_COMMANDS = frozenset({"subscribe", "unsubscribe", "expose", "unexpose"})
#: ``POST /{cmd}/{topic}``: a private topic, admins only.
TOPIC_SECURITY_COMMANDS = frozenset({"private_topic", "public_topic"})
#: ``POST /{cmd}/{cid}/{topic}``: who may use a private topic, admins only.
CID_SECURITY_COMMANDS = frozenset({"authorize", "unauthorize"})

LOGIN_ID = (1).to_bytes(8, "little")
"""Id of the login message of a request's connection."""
REQUEST_ID = (2).to_bytes(8, "little")
"""Id of the request message of a request's connection."""

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
STATUS_HEADER = "X-Rembus-Status"
"""Header with the Rembus status of a failed request (e.g. 42: method unknown)."""


@dataclass(frozen=True, slots=True)
class Route:
    """What a request asks for."""

    kind: Kind
    topic: str
    """The topic or method (``__config__`` for ``/admin``)."""
    cmd: str = ""
    """The admin command, for every kind but publish and rpc."""
    cid: str = ""
    """The component a ``component`` or ``security`` command is about."""
    args: tuple[Any, ...] = ()
    """The arguments of a publication or call."""

    @property
    def for_admins(self) -> bool:
        """Only an admin may ask for it."""
        return self.kind in ("admin", "security")


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """An HTTP response."""

    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Credentials:
    """The user and password of a Basic ``Authorization`` header."""

    user: str
    password: str
    """Empty when the header gives only a name."""


@dataclass(frozen=True, slots=True)
class Login:
    """How a request's connection logs in."""

    name: str | None
    """``None``: it stays anonymous."""
    vouched: bool = False
    """The driver checked a password: the connection counts as logged in with a key
    (admin rights, private topics); else the name is taken as an unregistered one."""


def problem(status: int, text: str, **headers: str) -> HttpAnswer:
    """A plain-text error answer."""
    return HttpAnswer(status, f"{text}\n".encode(), TEXT, tuple(headers.items()))


def unauthorized(text: str) -> HttpAnswer:
    """A 401 that asks for Basic credentials."""
    return problem(401, text, **{"WWW-Authenticate": 'Basic realm="rembus"'})


def parse_route(method: str, target: str, body: bytes,
                names: NameLimits = DEFAULT_NAME_LIMITS) -> Route | HttpAnswer | None:
    """The route of a request; an error answer; ``None`` when no API path matches."""
    path = target.split("?", 1)[0]
    if not path.startswith("/"):
        return None
    try:
        parts = [unquote(part, errors="strict") if "%" in part else part
                 for part in path[1:].split("/")]
    except UnicodeDecodeError:
        return problem(400, "the path is not UTF-8 once percent-decoded")
    if any(not part for part in parts):
        return None
    route = _route(method, parts)
    if route is None or isinstance(route, HttpAnswer):
        return route
    for what, value in (("topic", route.topic), ("cid", route.cid)):
        if what == "cid" and not value:
            continue
        reason = check_topic(value, names) if what == "topic" else check_name(value, names)
        if reason is not None:
            return problem(400, reason)
    if route.kind in ("publish", "rpc"):
        args = parse_args(body)
        if isinstance(args, HttpAnswer):
            return args
        return Route(route.kind, route.topic, args=args)
    return route


def _route(method: str, parts: list[str]) -> Route | HttpAnswer | None:
    count = len(parts)
    head = parts[0]
    if count == 1:
        if method == "POST":
            return Route("publish", head)
        if method == "GET":
            return Route("rpc", head)
        return problem(405, f"{method} is not allowed here: GET calls, POST publishes",
                       Allow="GET, POST")
    expected = "GET" if head == "admin" else "POST"
    if count == 2 and head == "admin":
        route: Route | None = (Route("admin", CONFIG_TOPIC, parts[1])
                               if parts[1] in ADMIN_COMMANDS else None)
        if route is None:
            return problem(404, f"unknown admin command {parts[1]!r}")
    elif count == 2 and head == "rpc":
        route = Route("rpc", parts[1])
    elif count == 2 and head in TOPIC_SECURITY_COMMANDS:
        route = Route("security", parts[1], head)
    elif count == 3 and head in COMPONENT_COMMANDS:
        route = Route("component", parts[1], head, normalize_name(parts[2]))
    elif count == 3 and head in CID_SECURITY_COMMANDS:
        route = Route("security", parts[2], head, normalize_name(parts[1]))
    else:
        return None
    if method != expected:
        return problem(405, f"use {expected} for /{head}", Allow=expected)
    return route


def parse_args(body: bytes) -> tuple[Any, ...] | HttpAnswer:
    """The arguments in a request body: empty for none, else a JSON array."""
    if not body.strip():
        return ()
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 is a ValueError too
        return problem(400, f"the body is not JSON: {exc}")
    if not isinstance(value, list):
        return problem(400, "the body must be a JSON array of arguments")
    return tuple(value)


def parse_credentials(headers: Sequence[tuple[str, str]]) -> Credentials | HttpAnswer | None:
    """The Basic credentials of a request; ``None`` without an ``Authorization`` header.

    ``Basic <base64>`` as RFC 7617 writes it, or the bare base64 text that
    Rembus.jl clients send; ``user:password`` or just ``user``.
    """
    values = [value for name, value in headers if name.lower() == "authorization"]
    if not values:
        return None
    if len(values) > 1:
        return unauthorized("more than one Authorization header")
    scheme, _, token = values[0].strip().partition(" ")
    if not token:
        token = scheme
    elif scheme.lower() != "basic":
        return unauthorized(f"unsupported authorization scheme {scheme!r}: use Basic")
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return unauthorized("the Basic credentials are not base64 of UTF-8 text")
    user, _, password = text.partition(":")
    user = normalize_name(user)
    if not user:
        return unauthorized("the Basic credentials have no user name")
    return Credentials(user, password)


@dataclass(frozen=True, slots=True)
class Checks:
    """What the driver looks up for :func:`decide_login`."""

    authenticated: bool
    """The broker admits only components that log in."""
    password_ok: Callable[[str, str], bool]
    protected: Callable[[str], bool]
    """The name has a registered key or a password: it cannot be taken without one."""
    is_admin: Callable[[str], bool]


def decide_login(route: Route, credentials: Credentials | None, checks: Checks
                 ) -> Login | HttpAnswer:
    """Who the request's connection is, by the rules of a WebSocket login.

    A password must match the one set for the user. A name alone is taken
    only where a WebSocket component could take it: the name is not
    registered (nor has a password) and the broker is not in authenticated mode; without
    credentials the request is anonymous, again only outside that mode.
    Admin routes need an admin with its password. A component command acts
    as its ``cid``: the caller is that component, or an admin.
    """
    caller: Login
    if credentials is None:
        if checks.authenticated:
            return unauthorized("this broker admits only authenticated components")
        caller = Login(None)
    elif credentials.password:
        if not checks.password_ok(credentials.user, credentials.password):
            return unauthorized(f"{credentials.user}: authentication failed")
        caller = Login(credentials.user, vouched=True)
    else:
        if checks.authenticated or checks.protected(credentials.user):
            return unauthorized(f"{credentials.user}: a password is required")
        caller = Login(credentials.user)
    admin = caller.vouched and caller.name is not None and checks.is_admin(caller.name)
    if route.for_admins:
        if admin:
            return caller
        if caller.name is None:
            return unauthorized("this command is for admins: log in as one")
        return problem(403, f"{caller.name} is not an admin")
    if route.kind != "component" or caller.name == route.cid:
        return caller
    if admin:
        return Login(route.cid, vouched=True)
    if caller.name is None:
        if checks.protected(route.cid):
            return unauthorized(f"{route.cid}: a password is required")
        return Login(route.cid)
    return problem(403, f"{caller.name} cannot act as {route.cid}")


def request_frame(route: Route) -> bytes:
    """The message that carries out ``route``, with id :data:`REQUEST_ID`.

    Raises :class:`~rembus_proto.cbor.EncodeError` for arguments CBOR cannot hold.
    """
    if route.kind == "publish":
        return Pub(route.topic, Payload.of(list(route.args))).encode()
    if route.kind == "rpc":
        return Rpc(REQUEST_ID, route.topic, Payload.of(list(route.args))).encode()
    command: dict[str, Any] = {"cmd": route.cmd}
    if route.kind == "security" and route.cmd in CID_SECURITY_COMMANDS:
        command["cid"] = route.cid
    return Admin(REQUEST_ID, route.topic, command).encode()


def waits_for_answer(route: Route) -> bool:
    """Whether the router answers the request (a publication is not answered)."""
    return route.kind != "publish"


def answer(route: Route, response: Response) -> HttpAnswer:
    """The HTTP answer to the router's RESPONSE to the request.

    As Rembus.jl: 200 and the JSON value on success (an empty body for a
    command without a value), 403 otherwise, here with the error as JSON and
    its Rembus status in :data:`STATUS_HEADER`; but an unknown method is 404,
    as for any path that leads nowhere.
    """
    try:
        value = jsonable(response.data)
        body = b"" if value is None and route.kind != "rpc" else json.dumps(value).encode()
    except (ProtocolError, EncodeError) as exc:
        return problem(502, f"the answer cannot be written as JSON: {exc}")
    if response.status == Status.OK:
        return HttpAnswer(200, body, JSON)
    status = 404 if response.status == Status.METHOD_NOT_FOUND else 403
    return HttpAnswer(status, body, JSON, ((STATUS_HEADER, str(int(response.status))),))


def login_failed(response: Response) -> HttpAnswer:
    """The answer when the router refused the login of the request's connection."""
    try:
        reason = response.data.value
    except ProtocolError:
        reason = None
    status = 409 if reason == "already connected" else 403
    return problem(status, f"login refused: {reason}",
                   **{STATUS_HEADER: str(int(response.status))})


def is_ok(response: Response) -> bool:
    """A successful RESPONSE."""
    return response.status == Status.OK


__all__ = ["ADMIN_COMMANDS", "CID_SECURITY_COMMANDS", "COMPONENT_COMMANDS", "LOGIN_ID",
           "REQUEST_ID", "STATUS_HEADER", "TOPIC_SECURITY_COMMANDS", "Checks", "Credentials",
           "HttpAnswer", "Login", "Route", "answer", "decide_login", "is_ok", "login_failed",
           "parse_args", "parse_credentials", "parse_route", "problem", "request_frame",
           "unauthorized", "waits_for_answer"]
