"""Coverage-guided fuzzing of the HTTP API's rules and the router behind them.

Run: python fuzz/fuzz_http_api.py -max_total_time=60 [corpus-dir]

A fuzzed request (method, path built from the API's words and fuzzed
segments, body, Authorization header) goes through
``rembus_proto.broker.http_routes`` as the broker's driver uses it: route,
credentials, login decision, request frame; then, as an exchange does, a
router connection logs in (IDENTITY or ``vouch``) and sends the frame. Only
an :class:`HttpAnswer` may come out of the rules (4xx, or the router's
answer), only ``EncodeError`` out of building the frame, only
``ProtocolError`` out of the router, and a close with code 1011 (a failure
handling a message) counts as a crash.
"""

from __future__ import annotations

import base64
import sys

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("atheris is not installed: python -m pip install -e '.[fuzz]'")

with atheris.instrument_imports():
    from rembus_proto import ProtocolError, Response, decode
    from rembus_proto.broker import CLOSE_INTERNAL_ERROR, Close, NeedKey, Router, RouterConfig
    from rembus_proto.broker.http_routes import (
        LOGIN_ID,
        REQUEST_ID,
        Checks,
        HttpAnswer,
        Route,
        answer,
        decide_login,
        parse_credentials,
        parse_route,
        request_frame,
    )
    from rembus_proto.errors import EncodeError
    from rembus_proto.messages import Identity
    from rembus_proto.security_port import MemorySecurity
    from rembus_proto.store import MemoryStore

_WORDS = ["admin", "rpc", "subscribe", "unsubscribe", "expose", "unexpose", "private_topic",
          "public_topic", "authorize", "unauthorize", "broker_config", "shutdown", "t", "boss",
          "alice", "%2F", "%ff", "%00", "", "a*", "**"]
_METHODS = ["GET", "POST", "PUT", "HEAD", "DELETE"]
_USERS = ["boss:b", "boss:x", "alice:a", "alice", "free", "boss", ":p", ""]
_PASSWORDS = {"boss": "b", "alice": "a"}


def _checks(authenticated: bool) -> Checks:
    return Checks(authenticated=authenticated,
                  password_ok=lambda name, pw: _PASSWORDS.get(name) == pw,
                  protected=lambda name: name in _PASSWORDS,
                  is_admin=lambda name: name == "boss")


def _path(fdp: atheris.FuzzedDataProvider) -> str:
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return fdp.ConsumeUnicodeNoSurrogates(40)
    parts = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        if fdp.ConsumeBool():
            parts.append(fdp.PickValueInList(_WORDS))
        else:
            parts.append(fdp.ConsumeUnicodeNoSurrogates(8))
    return "/" + "/".join(parts)


def _headers(fdp: atheris.FuzzedDataProvider) -> tuple[tuple[str, str], ...]:
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:
        return ()
    if choice == 1:
        return (("Authorization", fdp.ConsumeUnicodeNoSurrogates(30)),)
    token = base64.b64encode(fdp.PickValueInList(_USERS).encode()).decode()
    return (("Authorization", f"Basic {token}" if choice == 2 else token),)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    authenticated = fdp.ConsumeBool()
    method = fdp.PickValueInList(_METHODS)
    path = _path(fdp)
    headers = _headers(fdp)
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
    route = parse_route(method, path, body)
    if route is None or isinstance(route, HttpAnswer):
        assert route is None or 400 <= route.status < 500
        return
    credentials = parse_credentials(headers)
    if isinstance(credentials, HttpAnswer):
        assert credentials.status == 401
        return
    login = decide_login(route, credentials, _checks(authenticated))
    if isinstance(login, HttpAnswer):
        assert login.status in (401, 403)
        return
    try:
        frame = request_frame(route)
    except EncodeError:
        return
    _exchange(route, login.name, login.vouched, frame, authenticated)


def _exchange(route: Route, name: str | None, vouched: bool, frame: bytes,
              authenticated: bool) -> None:
    router = Router(MemoryStore(), RouterConfig(authenticated=authenticated),
                    security=MemorySecurity(admins=["boss"]))
    conn = router.connect(0.0, "http")
    try:
        if name is not None and vouched:
            router.vouch(conn, LOGIN_ID, name, 0.0)
        elif name is not None:
            router.receive(conn, Identity(LOGIN_ID, name).encode(), 0.0)
            for request in router.events():
                if isinstance(request, NeedKey):  # no key is registered here
                    router.key_found(conn, name, None, 0.0)
        router.receive(conn, frame, 0.0)
    except ProtocolError:
        return
    for event in router.events():
        assert not (isinstance(event, Close) and event.code == CLOSE_INTERNAL_ERROR), event
    for _, frames in router.data_to_send():
        for sent in frames:
            message = decode(sent)
            if isinstance(message, Response) and message.id == REQUEST_ID:
                assert 200 <= answer(route, message).status < 600
    router.disconnect(conn, 0.0)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
