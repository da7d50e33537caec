"""The HTTP API's rules on the sans-IO core: routes, credentials, who acts, answers,
and the router's login of a connection the driver vouches for."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from rembus.broker.http_passwords import (
    MAX_FAILURES,
    PASSWORDS_FILE,
    HttpPasswords,
    hash_password,
)
from rembus_proto import Payload, Response, decode
from rembus_proto.broker import Router, RouterConfig
from rembus_proto.broker.http_routes import (
    LOGIN_ID,
    REQUEST_ID,
    Checks,
    Credentials,
    HttpAnswer,
    Login,
    Route,
    answer,
    decide_login,
    parse_credentials,
    parse_route,
    request_frame,
)
from rembus_proto.messages import Admin, Pub, Rpc
from rembus_proto.security_port import MemorySecurity
from rembus_proto.store import MemoryStore

PASSWORDS = {"boss": "b", "alice": "a"}
KEYS = {"keyed"}


def checks(authenticated: bool = False) -> Checks:
    return Checks(authenticated=authenticated,
                  password_ok=lambda name, pw: PASSWORDS.get(name) == pw,
                  protected=lambda name: name in PASSWORDS or name in KEYS,
                  is_admin=lambda name: name == "boss")


def basic(text: str) -> tuple[tuple[str, str], ...]:
    return (("Authorization", "Basic " + base64.b64encode(text.encode()).decode()),)


def test_routes() -> None:
    assert parse_route("POST", "/t?x=1", b"[1, 2]") == Route("publish", "t", args=(1, 2))
    assert parse_route("POST", "/t", b"  ") == Route("publish", "t")
    assert parse_route("GET", "/m", b"[]") == Route("rpc", "m")
    assert parse_route("POST", "/rpc/m", b'["a"]') == Route("rpc", "m", args=("a",))
    assert parse_route("POST", "/a%2Fb", b"") == Route("publish", "a/b")
    assert parse_route("GET", "/admin/shutdown", b"") == Route("admin", "__config__", "shutdown")
    assert parse_route("POST", "/subscribe/t/Bob", b"") == Route("component", "t", "subscribe",
                                                                 "Bob")
    assert parse_route("POST", "/authorize/bob/t", b"") == Route("security", "t", "authorize",
                                                                 "bob")
    assert parse_route("POST", "/public_topic/t", b"") == Route("security", "t", "public_topic")
    for method, path in (("GET", "/"), ("GET", "//x"), ("POST", "/x/y/z/w"), ("GET", "x"),
                         ("POST", "/subscribe/t")):
        assert parse_route(method, path, b"") is None, path


@given(st.text(max_size=8), st.text(max_size=60), st.binary(max_size=60))
def test_any_request_gets_a_route_an_answer_or_none(method: str, path: str,
                                                    body: bytes) -> None:
    route = parse_route(method, path, body)
    assert route is None or isinstance(route, Route | HttpAnswer)
    if isinstance(route, HttpAnswer):
        assert 400 <= route.status < 500
    elif isinstance(route, Route) and route.kind in ("publish", "rpc"):
        request_frame(route)  # JSON values always become CBOR


@given(st.text(max_size=40))
def test_any_authorization_header_is_credentials_or_401(value: str) -> None:
    result = parse_credentials((("authorization", value),))
    assert isinstance(result, Credentials) or (isinstance(result, HttpAnswer)
                                               and result.status == 401)


def test_credentials() -> None:
    assert parse_credentials(()) is None
    assert parse_credentials(basic("alice:a:b")) == Credentials("alice", "a:b")
    assert parse_credentials(basic("alice")) == Credentials("alice", "")
    bare = base64.b64encode(b"boss:b").decode()  # as Rembus.jl clients send it
    assert parse_credentials((("authorization", bare),)) == Credentials("boss", "b")
    assert isinstance(parse_credentials(basic("alice") * 2), HttpAnswer)


def test_who_acts() -> None:
    publish, admin = Route("publish", "t"), Route("admin", "__config__", "broker_config")
    component = Route("component", "t", "subscribe", "carol")
    assert decide_login(publish, None, checks()) == Login(None)
    assert decide_login(publish, Credentials("alice", "a"), checks()) == Login("alice", True)
    assert decide_login(publish, Credentials("free", ""), checks()) == Login("free")
    refused = {
        (publish, None, True): 401, (publish, Credentials("alice", "x"), False): 401,
        (publish, Credentials("alice", ""), False): 401,
        (publish, Credentials("keyed", ""), False): 401,
        (publish, Credentials("free", ""), True): 401,
        (admin, None, False): 401, (admin, Credentials("alice", "a"), False): 403,
        (admin, Credentials("free", ""), False): 403,
        (component, Credentials("alice", "a"), False): 403,
        (Route("component", "t", "expose", "alice"), None, False): 401,
    }
    for (route, credentials, authenticated), status in refused.items():
        result = decide_login(route, credentials, checks(authenticated))
        assert isinstance(result, HttpAnswer) and result.status == status, (route, credentials)
    assert decide_login(admin, Credentials("boss", "b"), checks(True)) == Login("boss", True)
    assert decide_login(component, None, checks()) == Login("carol")
    assert decide_login(component, Credentials("carol", ""), checks()) == Login("carol")
    assert decide_login(component, Credentials("boss", "b"), checks()) == Login("carol", True)


def test_frames_and_answers() -> None:
    assert decode(request_frame(Route("publish", "t", args=(1,)))) == Pub("t", Payload.of([1]))
    rpc = decode(request_frame(Route("rpc", "m", args=(1,))))
    assert isinstance(rpc, Rpc) and rpc.id == REQUEST_ID and rpc.data.value == [1]
    admin = decode(request_frame(Route("security", "t", "authorize", "bob")))
    assert isinstance(admin, Admin) and admin.command == {"cmd": "authorize", "cid": "bob"}
    ok = answer(Route("rpc", "m"), Response(REQUEST_ID, 0, Payload.of(b"\x01")))
    assert (ok.status, ok.body) == (200, b'"AQ=="')  # bytes as base64, as in JSON frames
    done = answer(Route("component", "t", "subscribe", "c"), Response(REQUEST_ID, 0))
    assert (done.status, done.body) == (200, b"")
    assert answer(Route("rpc", "m"), Response(REQUEST_ID, 42, Payload.of("x"))).status == 404
    assert answer(Route("rpc", "m"), Response(REQUEST_ID, 43, Payload.of("x"))).status == 403


def test_a_vouched_connection_counts_as_logged_in_with_a_key() -> None:
    router = Router(MemoryStore(), RouterConfig(authenticated=True),
                    security=MemorySecurity(admins=["boss"]))
    conn = router.connect(0.0)
    router.vouch(conn, LOGIN_ID, "boss", 0.0)
    router.receive(conn, request_frame(Route("admin", "__config__", "broker_config")), 0.0)
    other = router.connect(0.0)
    router.vouch(other, LOGIN_ID, "boss", 0.0)  # the name is taken
    answers: dict[object, list[object]] = {}
    for target, frames in router.data_to_send():
        answers.setdefault(target, []).extend(decode(f) for f in frames)
    responses = [m for m in answers[conn] if isinstance(m, Response)]
    assert [(r.id, r.status) for r in responses if r.id in (LOGIN_ID, REQUEST_ID)] == [
        (LOGIN_ID, 0), (REQUEST_ID, 0)]
    assert any(isinstance(m, Response) and m.id == LOGIN_ID and m.status == 10
               and m.data.value == "already connected" for m in answers[other])


def test_http_passwords_file(tmp_path: Path) -> None:
    path = tmp_path / PASSWORDS_FILE
    path.write_text(json.dumps({"alice": hash_password("a", iterations=1000),
                                "bad": "not a hash"}))
    passwords = HttpPasswords(tmp_path)
    assert "alice" in passwords and "bob" not in passwords
    assert passwords.verify("alice", "a") and passwords.verify("alice", "a")  # cached
    assert not passwords.verify("alice", "b") and not passwords.verify("bad", "not a hash")
    assert not passwords.verify("bob", "a")
    for _ in range(MAX_FAILURES - 1):  # one wrong already
        assert not passwords.verify("alice", "wrong")
    assert not passwords.verify("alice", "a")  # locked out, right password or not
    assert passwords.verify("bob", "x") is False
    path.write_text("[not json")
    assert "alice" not in HttpPasswords(tmp_path)  # unreadable: nobody gets in
