"""The HTTP API through real HTTP requests to a broker process, with real components
on the WebSocket side."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rembus.sync
import rembus_proto as rp
from behaviour_drivers import Collector
from broker_process import WAIT, BrokerProcess, rembus_cli
from rembus.broker.http_passwords import HttpPasswords
from rembus.broker.server import Broker, BrokerConfig
from rembus.client.wire import Wire
from rembus.errors import MethodException, MethodNotFound, MethodUnavailable, RembusError
from rembus.security.file_security import FileSecurity
from rembus_proto.broker import RouterConfig

BOSS = ("boss", "boss-secret")
"""An admin with an HTTP password."""
ALICE = ("alice", "alice-secret")
"""A component with an HTTP password, not an admin."""


class Answer:
    """An HTTP response, read in full."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


def call(port: int, method: str, path: str, body: bytes | None = None,
         auth: tuple[str, str] | str | None = None, headers: dict[str, str] | None = None
         ) -> Answer:
    """One request on a connection of its own; ``auth``: (user, password) or a name."""
    sent = dict(headers or {})
    if auth is not None:
        text = auth if isinstance(auth, str) else f"{auth[0]}:{auth[1]}"
        sent["Authorization"] = "Basic " + base64.b64encode(text.encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=sent)
        return Answer(conn.getresponse())
    finally:
        conn.close()


def prepare(data: Path) -> None:
    """Passwords for boss and alice; boss is an admin."""
    passwords = HttpPasswords(data)
    for name, password in (BOSS, ALICE):
        passwords.set(name, password)
    FileSecurity(data).add_admin(BOSS[0])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    data = tmp_path / "broker"
    prepare(data)
    with BrokerProcess(data) as process:
        yield process


def test_publish_reaches_a_subscriber(broker: BrokerProcess) -> None:
    got, bare = Collector(), Collector()
    with rembus.sync.component(f"{broker.url}/sub") as sub:
        sub.subscribe(got, topic="mytopic")
        sub.subscribe(bare, topic="noargs")
        answer = call(broker.port, "POST", "/mytopic", b'[1, "two", {"x": [3.5, null]}]')
        assert answer.status == 200 and answer.body == b""
        assert got.wait_for(1) == [(1, "two", {"x": [3.5, None]})]
        assert call(broker.port, "POST", "/noargs").status == 200
        assert bare.wait_for(1) == [()]
        # a named HTTP publisher (unregistered name, no password) is routed the same way
        assert call(broker.port, "POST", "/mytopic", b"[4]", auth="pubber").status == 200
        assert got.wait_for(2)[1] == 4


def test_rpc_returns_the_exposers_result(broker: BrokerProcess) -> None:
    def fail(x: int) -> int:
        raise ValueError(f"no luck with {x}")

    with rembus.sync.component(f"{broker.url}/calc") as calc:
        calc.expose(lambda x, y: {"sum": x + y}, topic="add")
        calc.expose(fail, topic="fail")
        answer = call(broker.port, "GET", "/add", b"[1, 2]")
        assert (answer.status, answer.json()) == (200, {"sum": 3})
        assert answer.headers["content-type"] == "application/json"
        answer = call(broker.port, "POST", "/rpc/add", b"[40, 2]", auth=ALICE)
        assert (answer.status, answer.json()) == (200, {"sum": 42})
        answer = call(broker.port, "GET", "/fail", b"[7]")
        assert answer.status == 403 and answer.headers["x-rembus-status"] == "40"
        assert "no luck with 7" in answer.json()
        answer = call(broker.port, "GET", "/nobody", b"[]")
        assert answer.status == 404 and answer.headers["x-rembus-status"] == "42"
        assert answer.json() == "nobody: method unknown"
        # a built-in method of the broker, without a body
        assert call(broker.port, "GET", "/rid").json() == "broker"


def test_hostile_requests_get_one_error_each(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "broker", "--http-max-body", "64") as broker:
        port = broker.port
        for body in (b"[1, 2", b"\xff\xfe", b"[[[[", b'"text"',
                     b'{"a": 1}', b"3"):
            answer = call(port, "POST", "/topic", body)
            assert answer.status == 400, (body, answer.body)
        assert call(port, "GET", "/method", b"{}").status == 400
        assert call(port, "POST", "/topic", b"[" + b"1," * 40 + b"1]").status == 413
        assert call(port, "POST", "/bad%01topic", b"[]").status == 400
        assert call(port, "POST", "/bad%ffutf8", b"[]").status == 400
        assert call(port, "PUT", "/topic", b"[]").status == 405
        assert call(port, "GET", "/subscribe/t/c").status == 405
        assert call(port, "GET", "/admin/rm_rf", auth=BOSS).status == 404
        assert call(port, "GET", "/a/b/c/d").status == 404
        for header in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b":pw").decode()):
            answer = call(port, "POST", "/topic", b"[]", headers={"Authorization": header})
            assert answer.status == 401 and "basic" in answer.headers["www-authenticate"].lower()
        # the broker still serves, WebSocket and HTTP
        with rembus.sync.component(broker.url) as component:
            assert component.rpc("rid") == "broker"
        assert call(port, "GET", "/health").status == 200


def test_the_api_can_be_turned_off(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "broker", "--no-http-api") as broker:
        assert call(broker.port, "POST", "/topic", b"[]").status == 404
        assert call(broker.port, "GET", "/health").status == 200


def test_admin_routes_are_for_admins(broker: BrokerProcess) -> None:
    port = broker.port
    answer = call(port, "GET", "/admin/broker_config")
    assert answer.status == 401
    assert call(port, "GET", "/admin/broker_config", auth=ALICE).status == 403
    assert call(port, "GET", "/admin/broker_config", auth=(BOSS[0], "wrong")).status == 401
    assert call(port, "GET", "/admin/broker_config", auth=BOSS[0]).status == 401
    with rembus.sync.component(f"{broker.url}/calc") as calc:
        calc.expose(lambda: 1, topic="one")
        answer = call(port, "GET", "/admin/broker_config", auth=BOSS)
        assert answer.status == 200
        assert answer.json() == {"exposers": {"one": ["calc"]}, "subscribers": {}}


def test_the_password_command_sets_a_working_password(tmp_path: Path) -> None:
    data = tmp_path / "broker"
    env = dict(os.environ)
    done = rembus_cli("broker", "http-password", "carol", "--data-dir", str(data),
                      env=env, stdin="carol-secret\n")
    assert done.returncode == 0, done.stderr
    assert "carol-secret" not in (data / "http_passwords.json").read_text()
    assert rembus_cli("broker", "admin", "add", "carol", "--force", "--data-dir", str(data),
                      env=env).returncode == 0
    with BrokerProcess(data, env=env) as broker:
        assert call(broker.port, "GET", "/admin/broker_config",
                    auth=("carol", "carol-secret")).status == 200
        assert call(broker.port, "GET", "/admin/broker_config",
                    auth=("carol", "other")).status == 401
        assert rembus_cli("broker", "http-password", "carol", "--remove", "--data-dir",
                          str(data), env=env).returncode == 0  # read again when it changes
        assert call(broker.port, "GET", "/admin/broker_config",
                    auth=("carol", "carol-secret")).status == 401


def test_an_authenticated_broker_refuses_anonymous_requests(tmp_path: Path) -> None:
    data = tmp_path / "broker"
    prepare(data)
    with BrokerProcess(data, "--authenticated") as broker:
        port = broker.port
        assert call(port, "POST", "/topic", b"[1]").status == 401
        assert call(port, "GET", "/rid").status == 401
        assert call(port, "GET", "/rid", auth="someone").status == 401
        assert call(port, "POST", "/subscribe/t/someone").status == 401
        answer = call(port, "GET", "/rid", auth=ALICE)
        assert (answer.status, answer.json()) == (200, "broker")
        assert call(port, "GET", "/admin/broker_config", auth=BOSS).status == 200


def test_component_routes_change_what_components_observe(broker: BrokerProcess) -> None:
    port = broker.port
    with rembus.sync.component(broker.url) as caller:
        with pytest.raises(MethodNotFound):
            caller.rpc("svc")
        # dave is away: the broker routes svc to him, so it is unavailable, not unknown
        assert call(port, "POST", "/expose/svc/dave").status == 200
        with pytest.raises(MethodUnavailable):
            caller.rpc("svc")
        assert call(port, "POST", "/unexpose/svc/dave").status == 200
        with pytest.raises(MethodNotFound):
            caller.rpc("svc")

    assert call(port, "POST", "/subscribe/news/carol").status == 200
    ping, news = Collector(), Collector()
    with rembus.sync.component(f"{broker.url}/carol") as carol:
        carol.subscribe(ping, topic="ping")
        assert call(port, "POST", "/news", b'["hello"]').status == 200
        assert call(port, "POST", "/ping", b"[1]").status == 200
        ping.wait_for(1)  # news came first: held until carol has a handler for it
        carol.subscribe(news, topic="news")
        assert news.wait_for(1) == ["hello"]
        # carol is connected: nobody else may log in as carol
        answer = call(port, "POST", "/unsubscribe/news/carol")
        assert answer.status == 409
    config = call(port, "GET", "/admin/broker_config", auth=BOSS).json()
    assert "carol" in config["subscribers"]["news"]
    assert call(port, "POST", "/unsubscribe/news/carol").status == 200
    config = call(port, "GET", "/admin/broker_config", auth=BOSS).json()
    assert "carol" not in config["subscribers"].get("news", [])

    # only carol herself (or an admin) acts for a name with a password
    assert call(port, "POST", "/subscribe/t/alice").status == 401
    assert call(port, "POST", "/subscribe/t/alice", auth="mallory").status == 403
    assert call(port, "POST", "/subscribe/t/alice", auth=ALICE).status == 200
    assert call(port, "POST", "/unsubscribe/t/alice", auth=BOSS).status == 200


def test_private_topic_routes_change_what_components_observe(broker: BrokerProcess) -> None:
    port = broker.port
    with (rembus.sync.component(f"{broker.url}/calc") as calc,
          rembus.sync.component(broker.url) as caller):
        calc.expose(lambda x, y: x + y, topic="add")
        assert caller.rpc("add", 1, 2) == 3
        assert call(port, "POST", "/private_topic/add", auth=ALICE).status == 403
        assert call(port, "POST", "/private_topic/add").status == 401
        assert call(port, "POST", "/private_topic/add", auth=BOSS).status == 200
        with pytest.raises(RembusError, match="unauthorized"):
            caller.rpc("add", 1, 2)
        answer = call(port, "GET", "/add", b"[1, 2]", auth=ALICE)
        assert answer.status == 403 and answer.json() == "unauthorized"
        # alice may call it now; calc, not authorized, cannot serve it
        assert call(port, "POST", "/authorize/alice/add", auth=BOSS).status == 200
        answer = call(port, "GET", "/add", b"[1, 2]", auth=ALICE)
        assert answer.status == 403 and answer.headers["x-rembus-status"] == "43"
        assert call(port, "POST", "/unauthorize/alice/add", auth=BOSS).status == 200
        assert call(port, "GET", "/add", b"[1, 2]", auth=ALICE).json() == "unauthorized"
        assert call(port, "POST", "/public_topic/add", auth=BOSS).status == 200
        assert caller.rpc("add", 1, 2) == 3
        with pytest.raises(MethodException):
            caller.rpc("add", 1, "x")


async def _raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_an_unanswered_call_gets_504_and_a_client_may_leave_early() -> None:
    """In process, to shorten the broker's call timeout; the exposer never answers."""
    call_id = bytes(range(1, 9))

    async def scenario() -> None:
        config = BrokerConfig(host="127.0.0.1", port=0, router=RouterConfig(call_timeout=0.5))
        async with Broker(config) as broker:
            exposer = await Wire.open("127.0.0.1", broker.port)
            exposer.send(rp.encode(rp.Admin(call_id, "slow", {"cmd": "expose"})))
            assert isinstance(rp.decode(await exposer.recv()), rp.Response)
            get = b"GET /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]"
            status, body = await _raw_http(broker.port, get)
            assert status == 504 and b"no answer within 0.5 s" in body
            assert isinstance(rp.decode(await exposer.recv()), rp.Rpc)
            # a client that leaves before the answer: the answer goes nowhere
            _, writer = await asyncio.open_connection("127.0.0.1", broker.port)
            writer.write(get)
            forwarded = rp.decode(await exposer.recv())
            assert isinstance(forwarded, rp.Rpc)
            writer.close()
            await writer.wait_closed()
            exposer.send(rp.encode(rp.Response(forwarded.id, 0, rp.Payload.of(1))))
            status, body = await _raw_http(broker.port, b"GET /rid HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (status, body) == (200, b'"broker"')
            assert len(broker.router.connections) == 1  # the exchanges left the router
            await exposer.close()

    asyncio.run(asyncio.wait_for(scenario(), WAIT))


def test_a_slow_body_meets_the_handshake_timeout() -> None:
    async def scenario() -> None:
        config = BrokerConfig(host="127.0.0.1", port=0, handshake_timeout=0.3)
        async with Broker(config) as broker:
            reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
            writer.write(b"POST /topic HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n[1")
            assert await reader.read() == b""  # closed, nothing published
            writer.close()
            assert not broker.router.connections

    asyncio.run(asyncio.wait_for(scenario(), WAIT))


def test_a_waiting_request_gets_503_when_the_broker_stops() -> None:
    async def scenario() -> None:
        broker = Broker(BrokerConfig(host="127.0.0.1", port=0))
        await broker.start()
        try:
            exposer = await Wire.open("127.0.0.1", broker.port)
            exposer.send(rp.encode(rp.Admin(bytes(8), "slow", {"cmd": "expose"})))
            assert isinstance(rp.decode(await exposer.recv()), rp.Response)
            waiting = asyncio.ensure_future(_raw_http(
                broker.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert isinstance(rp.decode(await exposer.recv()), rp.Rpc)
        finally:
            await broker.stop()
        status, body = await waiting
        assert status == 503 and b"stopping" in body

    asyncio.run(asyncio.wait_for(scenario(), WAIT))
