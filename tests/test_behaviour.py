"""The shared behaviour of the drivers: each test runs against async, sync, blocking, httpx.

Every test talks to a real broker on 127.0.0.1 (in process, or a child
process where it must be restarted). Waits end on events, never on sleeps;
``WAIT`` only guards against hangs.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from behaviour_drivers import DRIVERS, BrokerProcess, Collector, Session, in_process_broker
from rembus import (
    MethodException,
    MethodLoopback,
    MethodNotFound,
    MethodUnavailable,
    RembusConnectionClosed,
    RembusError,
    RembusTimeout,
    TargetDown,
    TargetNotFound,
    UnknownCommand,
)

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20
VALUES: list[Any] = [
    0, 1, -1, 23, 24, 255, 256, 65535, 65536, 2**32, 2**63 - 1, 2**64 - 1, 2**64,
    2**100, -(2**64), -(2**64) - 1, -(2**100),
    0.5, -1.25, 1e300, math.inf, -math.inf,
    "", "text", "unicode \u00e9\u4e2d\U0001f600",
    b"", b"\x00\xff" * 8,
    [], [1, "a", None], {}, {"a": 1, "b": [1, 2, {"c": b"x"}]}, {1: "int key"},
    None, True, False,
    {"nested": [[{"deep": [1, [2, [3, {"x": None}]]]}]]},
    b"\xab" * MIB, "s" * MIB,
]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def session(driver: str) -> Iterator[Session]:
    with in_process_broker() as url:
        s = Session(driver, url)
        try:
            yield s
        finally:
            s.close()



def same(a: Any, b: Any) -> bool:
    """Equal, with the types checked too (True is not 1 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- pub/sub --------------------------------------------------------------------


def test_pubsub_every_cbor_type(session: Session) -> None:
    sub, pub = session.component("sub_types"), session.component()
    got = Collector()
    sub.subscribe(got, topic="types")
    for value in VALUES:
        pub.publish("types", value)
    pub.publish("types", 1, "two", [3], {"four": 4})
    received = got.wait_for(len(VALUES) + 1)
    for sent, back in zip(VALUES, received[:-1], strict=True):
        assert same(sent, back), (sent if len(repr(sent)) < 200 else type(sent), back)
    assert received[-1] == (1, "two", [3], {"four": 4})


def test_publish_without_args(session: Session) -> None:
    sub, pub = session.component("sub_noargs"), session.component()
    got = Collector()
    sub.subscribe(got, topic="ping")
    pub.publish("ping")
    assert got.wait_for(1) == [()]


@pytest.mark.parametrize("qos", [1, 2])
def test_qos_publish_is_acknowledged_and_delivered_once(session: Session, qos: int) -> None:
    sub, pub = session.component("sub_qos"), session.component("pub_qos")
    got = Collector()
    sub.subscribe(got, topic="q")
    for i in range(20):
        pub.publish("q", i, qos=qos)
    pub.publish("q", "end", qos=qos)
    assert got.wait_for(21) == [*range(20), "end"]


@pytest.mark.parametrize("retroactive", [True, False])
def test_retroactive(session: Session, retroactive: bool) -> None:
    first = session.component("retro_sub")
    got_before = Collector()
    first.subscribe(got_before, retroactive, topic="news")
    first.close()
    pub = session.component("retro_pub")
    for i in range(3):
        pub.publish("news", i, qos=1)  # acknowledged: the broker has them before we go on
    got = Collector()
    again = session.component("retro_sub")
    again.subscribe(got, retroactive, topic="news")
    pub.publish("news", "fence", qos=1)
    if retroactive:
        assert got.wait_for(4) == [0, 1, 2, "fence"]
    else:
        assert got.wait_for(1) == ["fence"]
    assert got_before.items == []


def test_unsubscribe(session: Session) -> None:
    sub, pub = session.component("unsub"), session.component()
    gone, fence = Collector(), Collector()
    sub.subscribe(gone, topic="a")
    sub.subscribe(fence, topic="fence")
    pub.publish("a", 1)
    assert gone.wait_for(1) == [1]
    sub.unsubscribe("a")
    pub.publish("a", 2)
    pub.publish("fence", "done")
    fence.wait_for(1)
    assert gone.items == [1]


def test_unreactive_pauses_and_reactive_resumes(session: Session) -> None:
    sub, pub = session.component("paused"), session.component()
    got = Collector()
    sub.subscribe(got, True, topic="p")
    sub.unreactive()
    pub.publish("p", 1, qos=1)
    sub.reactive()
    pub.publish("p", 2, qos=1)
    assert got.wait_for(2) == [1, 2]


# -- rpc ------------------------------------------------------------------------


def test_rpc_results(session: Session) -> None:
    server, client = session.component("rpc_server"), session.component()

    def echo(*args: Any) -> Any:
        return args[0] if len(args) == 1 else list(args)

    server.expose(echo)
    server.expose(lambda: None, topic="nothing")
    for value in VALUES:
        assert same(client.rpc("echo", value), value)
    assert client.rpc("echo", 1, "a", [2]) == [1, "a", [2]]
    assert client.rpc("nothing") is None


def test_rpc_error_kinds(session: Session) -> None:
    server = session.component("err_server")
    client = session.component("err_client")

    def fails(reason: str) -> None:
        raise ValueError(reason)

    server.expose(fails)
    with pytest.raises(MethodNotFound) as not_found:
        client.rpc("nobody_exposes_this")
    assert not_found.value.status == 42
    with pytest.raises(MethodException, match="the reason") as exception:
        client.rpc("fails", "the reason")
    assert exception.value.status == 40 and exception.value.message == "the reason"
    client.expose(lambda: 1, topic="mine")
    with pytest.raises(MethodLoopback) as loopback:
        client.rpc("mine")
    assert loopback.value.status == 44
    with pytest.raises(TargetNotFound) as unknown:
        client.direct("nobody_has_this_name", "fails", "x")
    assert unknown.value.status == 45
    server.expose(lambda: 1, topic="gone_with_server")
    server.close()
    with pytest.raises(MethodUnavailable) as unavailable:
        client.rpc("gone_with_server")
    assert unavailable.value.status == 43
    with pytest.raises(TargetDown) as down:
        client.direct("err_server", "fails", "x")
    assert down.value.status == 46


def test_admin_commands(session: Session) -> None:
    client = session.component("admin_client")
    with pytest.raises(UnknownCommand) as unknown:
        client.admin("__config__", {"cmd": "no_such_command"})
    assert unknown.value.status == 47
    with pytest.raises(RembusError, match="unauthorized") as refused:
        client.admin("secret", {"cmd": "private_topic"})  # not an admin
    assert refused.value.status == 10
    with pytest.raises(TypeError, match="cmd"):
        client.admin("secret", {"nocmd": 1})


def test_rpc_timeout(session: Session) -> None:
    server, client = session.component("slow_server"), session.component()
    release = threading.Event()
    try:
        server.expose_waiting("never_answers", release)
        with pytest.raises(RembusTimeout) as timeout:
            client.rpc("never_answers", timeout=0.2)
        assert isinstance(timeout.value, TimeoutError)
    finally:
        release.set()
    assert client.rpc("never_answers") == "released"


def test_rpc_timeout_message_names_the_per_call_timeout(session: Session) -> None:
    server, client = session.component("slow_named"), session.component(timeout=30)
    release = threading.Event()
    try:
        server.expose_waiting("slow", release)
        with pytest.raises(RembusTimeout, match=r"rpc 'slow': no answer within 0\.2 s"):
            client.rpc("slow", timeout=0.2)
        with pytest.raises(RembusTimeout, match=r"direct 'slow': no answer within 0\.3 s"):
            client.direct("slow_named", "slow", timeout=0.3)
    finally:
        release.set()


def test_unexpose(session: Session) -> None:
    server, client = session.component("unexposer"), session.component()
    server.expose(lambda x: x, topic="echo1")
    assert client.rpc("echo1", 5) == 5
    server.unexpose("echo1")
    with pytest.raises(MethodNotFound):
        client.rpc("echo1", 5)


def test_direct_call(session: Session) -> None:
    one, two = session.component("direct_one"), session.component("direct_two")
    client = session.component()
    one.expose(lambda: "one", topic="who")
    two.expose(lambda: "two", topic="who")
    assert client.direct("direct_one", "who") == "one"
    assert client.direct("direct_two", "who") == "two"


def test_thousand_concurrent_rpcs(session: Session) -> None:
    server = session.component("adder", workers=8, max_handler_tasks=1000)
    client = session.component()
    server.expose(lambda a, b: a + b, topic="add")
    results = client.rpc_many("add", [(i, 1) for i in range(1000)])
    assert results == [i + 1 for i in range(1000)]


def test_handler_calls_rpc_on_its_own_component(session: Session) -> None:
    backend = session.component("backend")
    middle = session.component("middle", max_handler_tasks=1)
    client = session.component()
    backend.expose(lambda x: x * 10, topic="times_ten")
    middle.expose_calling("relay", "times_ten")
    assert client.rpc("relay", 4) == 40
    assert client.rpc_many("relay", [(i,) for i in range(20)]) == [i * 10 for i in range(20)]


# -- misuse ---------------------------------------------------------------------


def test_misuse_errors(session: Session) -> None:
    comp = session.component()
    with pytest.raises(TypeError, match="topic must be a str"):
        comp.publish({"name": 1})
    with pytest.raises(ValueError, match="needs a topic"):
        comp.subscribe(lambda x: x)
    with pytest.raises(ValueError, match="needs a topic"):
        comp.expose(lambda x: x)
    with pytest.raises(TypeError, match="unknown option"):
        session.connect_raw(session.url, no_such_option=1)
    with pytest.raises(RembusConnectionClosed):
        session.connect_raw("ws://127.0.0.1:1/nobody_listens")


def test_misuse_messages_name_the_call(session: Session) -> None:
    comp = session.component()
    with pytest.raises(TypeError, match=r"method name must be a str, not int \(rpc\(method"):
        comp.rpc(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"method name must not be empty \(rpc\(method"):
        comp.rpc("")
    with pytest.raises(TypeError, match=r"method name must be a str, not int \(direct\("):
        comp.direct("someone", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"target must be a component name.*direct\(target"):
        comp.direct(5, "method")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"topic must be a str, not int \(publish\(topic"):
        comp.publish(5, "x")
    with pytest.raises(TypeError, match=r"topic must be a str, not int \(admin\(topic"):
        comp.admin(5, {"cmd": "x"})  # type: ignore[arg-type]
    for call in ("subscribe", "expose", "unsubscribe", "unexpose"):
        with pytest.raises(TypeError, match=rf"^{call}\(\) takes a function"):
            getattr(comp, call)(5)
    for call in ("subscribe", "expose"):
        with pytest.raises(TypeError, match=rf"topic must be a str, not int \({call}\(\)"):
            getattr(comp, call)(lambda: None, topic=5)
    with pytest.raises(TypeError, match=r"cmd"):
        comp.admin("t", {"no": "cmd"})
    with pytest.raises(ValueError, match=r"qos must be the int 0, 1 or 2, not 3 \(publish\("):
        comp.publish("t", 1, qos=3)
    with pytest.raises(ValueError, match=r"^rpc\(\.\.\., timeout=\) takes a positive number"):
        comp.rpc("m", timeout=-1)
    with pytest.raises(TypeError, match=r"^direct\(\.\.\., timeout=\) takes a number"):
        comp.direct("someone", "m", timeout="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must be what CBOR carries"):
        comp.publish("t", [object()])


def test_closed_component_refuses_calls(session: Session) -> None:
    comp = session.component()
    comp.close()
    with pytest.raises(RembusConnectionClosed):
        comp.publish("t", 1)
    with pytest.raises(RembusConnectionClosed):
        comp.rpc("m")


# -- connecting ------------------------------------------------------------------


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers.

    The kernel completes each TCP handshake into the backlog; nothing is ever
    read or written, as with a broker that hangs.
    """
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield f"ws://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def closed_port() -> str:
    """The URL of a port of 127.0.0.1 that nothing listens on."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def connect_error(driver: str, url: str, **options: Any) -> str:
    s = Session(driver, url)
    try:
        with pytest.raises(RembusConnectionClosed) as info:
            s.connect_raw(url, **options)
    finally:
        s.close()
    assert str(info.value) == info.value.message
    return str(info.value)


def test_no_upgrade_answer_is_one_clear_error(driver: str, silent_listener: str) -> None:
    message = connect_error(driver, silent_listener, connect_timeout=0.3)
    assert message == (f"cannot connect to {silent_listener}: "
                       f"no WebSocket upgrade answer within 0.3 s")


def test_refused_connection_is_one_clear_error(driver: str, closed_port: str) -> None:
    message = connect_error(driver, closed_port, connect_timeout=5)
    assert message == f"cannot connect to {closed_port}: connection refused"


# -- reconnect ------------------------------------------------------------------

FAST = {"reconnect_initial": 0.05, "reconnect_max": 0.2}


def _lose_broker(session: Session, broker: BrokerProcess, pub: Any) -> None:
    """Stop the broker and return once ``pub`` has seen its connection go."""
    release = threading.Event()
    hanging = session.component(f"hanging_{session.driver}", **FAST)
    try:
        hanging.expose_waiting("hangs", release)
        pending = pub.start_rpc("hangs")
        broker.stop()
        with pytest.raises(RembusConnectionClosed):
            pending()  # the loss reached pub
    finally:
        release.set()


@pytest.mark.parametrize("qos", [1, 2])
def test_qos_publish_while_broker_down_times_out(
        driver: str, broker_process: BrokerProcess, qos: int) -> None:
    session = Session(driver, broker_process.url)
    try:
        sub = session.component(f"down_sub_{driver}", **FAST)
        got = Collector()
        sub.subscribe(got, True, topic="down_topic")
        pub = session.component(f"down_pub_{driver}", timeout=1, **FAST)
        _lose_broker(session, broker_process, pub)
        with pytest.raises(RembusTimeout, match=r"publish 'down_topic': no ACK within 1 s"):
            pub.publish("down_topic", "queued", qos=qos)
        broker_process.start()
        # As documented: the publication stayed queued and goes out after the reconnect.
        assert got.wait_for(1) == ["queued"]
    finally:
        session.close()


def test_qos_publish_while_broker_down_succeeds_after_restart(
        driver: str, broker_process: BrokerProcess) -> None:
    session = Session(driver, broker_process.url)
    try:
        sub = session.component(f"back_sub_{driver}", **FAST)
        got = Collector()
        sub.subscribe(got, True, topic="back_topic")
        pub = session.component(f"back_pub_{driver}", timeout=30, **FAST)
        _lose_broker(session, broker_process, pub)
        outcome = pub.start_publish("back_topic", "waited", qos=1)
        broker_process.start()
        assert outcome() is None
        assert got.wait_for(1) == ["waited"]
    finally:
        session.close()



def test_reconnect_after_broker_restart(driver: str, broker_process: BrokerProcess) -> None:
    session = Session(driver, broker_process.url)
    release = threading.Event()
    try:
        fast = {"reconnect_initial": 0.05, "reconnect_max": 0.2}
        # One peer both subscribes and exposes: once its messages flow again, its
        # exposures are restored too (they are re-sent before reactive).
        server = session.component("restart_peer", **fast)
        hanging = session.component("restart_hanging", **fast)
        pub = session.component("restart_pub", **fast)
        got = Collector()
        server.subscribe(got, True, topic="restart_topic")
        server.expose(lambda x: x + 1, topic="inc")
        hanging.expose_waiting("hangs", release)
        assert pub.rpc("inc", 1) == 2
        pending = pub.start_rpc("hangs")
        pub.publish("restart_topic", "before")  # QoS0: a QoS1 one may come again
        assert got.wait_for(1) == ["before"]

        broker_process.stop()
        with pytest.raises(RembusConnectionClosed):
            pending()
        for i in range(50):
            pub.publish("restart_topic", i)  # to the outbox while disconnected
        release.set()
        broker_process.start()

        assert got.wait_for(51) == ["before", *range(50)]
        assert pub.rpc("inc", 41) == 42
        assert pub.is_connected and server.is_connected
    finally:
        release.set()
        session.close()
