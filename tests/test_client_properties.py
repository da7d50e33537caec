"""Property tests of ClientConnection: random interleavings and hostile input."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from client_helpers import SeqIds, response
from rembus.testing import strategies as rst
from rembus_proto import (
    CONFIG_TOPIC,
    CONNECTION_ID,
    Ack,
    Ack2,
    Admin,
    Attestation,
    Identity,
    Payload,
    ProtocolError,
    Pub,
    Register,
    Rpc,
    Unregister,
    decode,
)
from rembus_proto.client import (
    ClientConfig,
    ClientConnection,
    ConnectionState,
    InvalidState,
    NotConnected,
    OutboxFull,
    TooManyPending,
)
from rembus_proto.client_events import (
    ChallengeRequested,
    Connected,
    LoginRefused,
    PublicationReceived,
    PublishAcked,
    PublishFailed,
    RequestAborted,
    RequestCompleted,
    RequestReceived,
    RequestTimedOut,
    RestoreFailed,
)

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_vectors.json").read_text())
GOLDEN_FRAMES = [bytes.fromhex(v["hex"]) for k, v in GOLDEN.items()
                 if not k.startswith(("tcp_", "signed_"))]

TOPICS = st.sampled_from(["a", "b", "f", CONFIG_TOPIC])
SCALARS = rst.scalars(max_size=8)
VALUES = rst.values(scalar=SCALARS, max_leaves=8, max_size=3)
STATUSES = st.sampled_from([0] * 8 + [10, 11, 40, 42, 47, 60, 1000])

REQUEST_END = (RequestCompleted, RequestTimedOut, RequestAborted)
PUBLISH_END = (PublishAcked, PublishFailed)


def _recent(ids: list[bytes], index: int) -> bytes:
    """Mostly one of the last few ids, sometimes any older one."""
    if index < 80:
        return ids[-1 - index % min(len(ids), 3)]
    return ids[index % len(ids)]


class ClientMachine(RuleBasedStateMachine):
    """A random broker and a random application around one ClientConnection."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = ClientConnection(None)
        self.now = 0.0
        self.requests: set[int] = set()  # handles of requests (rpc, admin, ...)
        self.publishes: set[int] = set()  # handles of QoS publications
        self.ended: Counter[int] = Counter()
        self.request_ids: list[bytes] = []  # ids of requests the client sent
        self.pub_ids: list[bytes] = []  # ids of QoS PUBs the client sent
        self.incoming: list[bytes] = []  # ids of RequestReceived not yet answered
        self.exposed_before: set[str] = set()

    @initialize(named=st.booleans(), policy=st.sampled_from(["error", "drop_oldest",
                                                             "drop_newest"]),
                outbox=st.integers(0, 3), retries=st.integers(0, 2))
    def setup(self, named: bool, policy: Any, outbox: int, retries: int) -> None:
        config = ClientConfig(request_timeout=5.0, ack_timeout=1.0, send_retries=retries,
                              max_pending_requests=4, max_unacked_publishes=3,
                              outbox_size=outbox, outbox_overflow=policy, qos2_dedup_size=3)
        self.conn = ClientConnection("comp" if named else None, config, id_factory=SeqIds())
        self.connect()

    # ------------------------------------------------------------ bookkeeping

    def _drain(self) -> None:
        for frame in self.conn.data_to_send():
            msg = decode(frame)  # every output is a valid message
            if isinstance(msg, (Identity, Attestation, Admin, Rpc, Register, Unregister)):
                self.request_ids.append(msg.id)
            elif isinstance(msg, Pub) and msg.qos:
                assert msg.id is not None
                self.pub_ids.append(msg.id)
        for event in self.conn.events():
            if isinstance(event, REQUEST_END):
                assert event.handle in self.requests, event
                self.ended[event.handle] += 1
                assert self.ended[event.handle] == 1, event
            elif isinstance(event, PUBLISH_END):
                assert event.handle in self.publishes, event
                self.ended[event.handle] += 1
                assert self.ended[event.handle] == 1, event
            elif isinstance(event, RequestReceived):
                self.incoming.append(event.request_id)
            else:
                assert isinstance(event, (Connected, ChallengeRequested, LoginRefused,
                                          PublicationReceived, RestoreFailed)), event

    def _request(self, handle: int | None) -> None:
        if handle is not None:
            assert handle not in self.requests and handle not in self.publishes
            self.requests.add(handle)
        self._drain()

    @property
    def is_open(self) -> bool:
        return self.conn.state is ConnectionState.OPEN

    # ------------------------------------------------------------ transport and clock

    @precondition(lambda self: self.conn.state in (ConnectionState.DISCONNECTED,
                                                   ConnectionState.CLOSED))
    @rule()
    def connect(self) -> None:
        self.conn.connect(self.now)
        self._drain()

    @rule(really=st.integers(0, 2), reconnect=st.booleans())
    def lose_connection(self, really: int, reconnect: bool) -> None:
        if really:
            return
        self.conn.connection_lost(self.now)
        self.incoming.clear()
        self._drain()
        assert self.conn.pending_count == 0
        if reconnect:
            self.connect()

    @precondition(lambda self: self.conn.state in (ConnectionState.HANDSHAKING,
                                                   ConnectionState.CHALLENGED))
    @rule()
    def broker_accepts_login(self) -> None:
        if self.request_ids:
            self.conn.receive_message(response(self.request_ids[-1], 0, None), self.now)
        self._drain()

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 6.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.conn.handle_timer(self.now)
        self._drain()
        deadline = self.conn.next_deadline()
        assert deadline is None or deadline > self.now

    @rule()
    def run_timers_to_next_deadline(self) -> None:
        deadline = self.conn.next_deadline()
        if deadline is not None:
            self.now = max(self.now, deadline)
            self.conn.handle_timer(self.now)
        self._drain()

    @precondition(lambda self: self.conn.state is ConnectionState.CHALLENGED)
    @rule(signature=st.binary(max_size=4))
    def attest(self, signature: bytes) -> None:
        with contextlib.suppress(InvalidState):  # already attested this challenge
            self.conn.attest(signature, self.now)
        self._drain()

    # ------------------------------------------------------------ application

    @rule(topic=TOPICS, qos=st.integers(0, 2), args=st.lists(SCALARS, max_size=2))
    def publish(self, topic: str, qos: int, args: list[Any]) -> None:
        try:
            handle = self.conn.publish(topic, args, qos=qos, now=self.now)
        except TooManyPending:
            assert qos and self.conn.unacked_count == 3
        except OutboxFull:
            assert not self.is_open and self.conn.config.outbox_overflow == "error"
        else:
            assert (handle is None) == (qos == 0)
            if handle is not None:
                assert handle not in self.requests and handle not in self.publishes
                self.publishes.add(handle)
        self._drain()

    @rule(kind=st.sampled_from(["rpc", "admin", "register", "unregister"]), topic=TOPICS)
    def request(self, kind: str, topic: str) -> None:
        conn = self.conn
        try:
            if kind == "rpc":
                handle = conn.rpc(topic, [1], now=self.now, timeout=None)
            elif kind == "admin":
                handle = conn.admin(topic, {"cmd": "x"}, now=self.now)
            elif kind == "register":
                handle = conn.register("n", "pin", b"key", 1, now=self.now)
            else:
                handle = conn.unregister(now=self.now)
        except NotConnected:
            assert not self.is_open
        except TooManyPending:
            assert conn.pending_count == 4
        else:
            self._request(handle)
        self._drain()

    @rule(cmd=st.sampled_from(["subscribe", "unsubscribe", "expose", "unexpose", "reactive"]),
          topic=TOPICS, on=st.booleans())
    def admin_helper(self, cmd: str, topic: str, on: bool) -> None:
        conn = self.conn
        was_open = self.is_open
        try:
            if cmd == "reactive":
                handle = conn.reactive(on, now=self.now)
            else:
                handle = getattr(conn, cmd)(topic, now=self.now)
        except TooManyPending:
            assert was_open and conn.pending_count == 4
        else:
            assert (handle is not None) == was_open
            self._request(handle)
        if cmd == "subscribe":
            assert topic in conn.subscriptions or conn.pending_count == 4
        self._drain()

    @precondition(lambda self: self.incoming)
    @rule(index=st.integers(0, 100), status=STATUSES, value=VALUES)
    def respond(self, index: int, status: int, value: Any) -> None:
        request_id = self.incoming.pop(index % len(self.incoming))
        self.conn.respond(request_id, status, value)
        self._drain()

    @rule(really=st.integers(0, 9))
    def close(self, really: int) -> None:
        if really:
            return
        self.conn.close()
        self.incoming.clear()
        self._drain()
        assert self.conn.pending_count == self.conn.unacked_count == self.conn.outbox_len == 0

    # ------------------------------------------------------------ broker

    @precondition(lambda self: self.request_ids)
    @rule(index=st.integers(0, 100), status=STATUSES, value=VALUES, forget=st.booleans())
    def broker_responds(self, index: int, status: int, value: Any, forget: bool) -> None:
        msg_id = _recent(self.request_ids, index)
        if forget:
            self.request_ids.remove(msg_id)
        if status == 11:
            value = b"chal"
        self.conn.receive_message(response(msg_id, status, value), self.now)
        self._drain()

    @precondition(lambda self: self.pub_ids)
    @rule(index=st.integers(0, 100), ack2=st.booleans())
    def broker_acks(self, index: int, ack2: bool) -> None:
        msg_id = _recent(self.pub_ids, index)
        frame = Ack2(msg_id).encode() if ack2 else Ack(msg_id).encode()
        self.conn.receive_message(frame, self.now)
        self._drain()

    @rule(topic=TOPICS, flags=st.sampled_from([0, 0x10, 0x30, 0x40, 0x70]),
          id_n=st.integers(0, 5), args=st.lists(SCALARS, max_size=2))
    def broker_publishes(self, topic: str, flags: int, id_n: int, args: list[Any]) -> None:
        msg_id = None if flags == 0 else id_n.to_bytes(8, "big")
        self.conn.receive_message(Pub(topic, Payload.of_args(args), msg_id, flags).encode(),
                                  self.now)
        self._drain()

    @rule(topic=TOPICS, id_n=st.integers(0, 5), ack2=st.booleans())
    def broker_sends_request(self, topic: str, id_n: int, ack2: bool) -> None:
        msg_id = (1000 + id_n).to_bytes(8, "big")
        self.conn.receive_message(Rpc(msg_id, topic, Payload.of_args([])).encode(), self.now)
        self.conn.receive_message(Admin(msg_id, topic, {"cmd": "expose"}).encode(), self.now)
        if ack2:
            self.conn.receive_message(Ack2(id_n.to_bytes(8, "big")).encode(), self.now)
        self._drain()

    @rule(really=st.integers(0, 4))
    def broker_unsolicited_challenge(self, really: int) -> None:
        if really:
            return
        self.conn.receive_message(response(CONNECTION_ID, 11, b"abcd"), self.now)
        self._drain()

    # ------------------------------------------------------------ invariants

    @invariant()
    def bounded(self) -> None:
        conn = self.conn
        config = conn.config
        assert conn.pending_count <= config.max_pending_requests
        assert conn.unacked_count <= config.max_unacked_publishes
        assert conn.outbox_len <= config.outbox_size
        assert len(conn._qos2_seen) <= config.qos2_dedup_size
        open_requests = {h for h in self.requests if not self.ended[h]}
        assert conn.pending_count == len(open_requests)
        if conn.pending_count or conn.state in (ConnectionState.HANDSHAKING,
                                                ConnectionState.CHALLENGED):
            assert conn.next_deadline() is not None
        if conn.state is not ConnectionState.OPEN:
            assert conn.pending_count == 0

    def teardown(self) -> None:
        self.conn.close()
        self._drain()
        for handle in self.requests | self.publishes:
            assert self.ended[handle] == 1, handle


ClientMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50,
                                           deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
TestClientMachine = ClientMachine.TestCase


# ---------------------------------------------------------------- hostile input


def _conn_in(state: str) -> ClientConnection:
    config = ClientConfig(max_pending_requests=3, qos2_dedup_size=2)
    if state == "open":
        conn = ClientConnection(None, config, id_factory=SeqIds())
        conn.expose("mytopic", now=0.0)
        conn.expose("add", now=0.0)
        conn.connect(0.0)
        conn.rpc("add", [1], now=0.0)
        conn.publish("mytopic", [1], qos=2, now=0.0)
        return conn
    conn = ClientConnection("mycomp", config, id_factory=SeqIds())
    conn.connect(0.0)
    if state == "challenged":
        conn.receive_message(response((1).to_bytes(8, "big"), 11, b"abcd"), 0.0)
    return conn


def _feed(conn: ClientConnection, frame: bytes) -> bool:
    """Feed one hostile frame and everything a driver does next; True if it raised
    ProtocolError (a driver then drops the connection and reconnects)."""
    raised = False
    try:
        conn.receive_message(frame, 1.0)
    except ProtocolError:
        raised = True
    conn.data_to_send()
    for event in conn.events():
        data = getattr(event, "data", None)
        if isinstance(data, Payload):
            with contextlib.suppress(ProtocolError):
                data.value  # noqa: B018
    conn.next_deadline()
    conn.handle_timer(100.0)
    return raised


def _sent(conn: ClientConnection, kind: type[Any]) -> Any:
    """The one message of type ``kind`` in the output."""
    [msg] = [m for m in map(decode, conn.data_to_send()) if isinstance(m, kind)]
    return msg


def _assert_usable(conn: ClientConnection, broken: bool) -> None:
    """The connection stays usable: a normal exchange works, on the same connection or,
    when the input broke it, after the reconnect a driver makes."""
    now = 200.0
    if broken or conn.state is not ConnectionState.OPEN:
        conn.connection_lost(now)
        conn.data_to_send()  # a driver drops what was not written on the lost transport
        conn.connect(now)
        if conn.state is ConnectionState.HANDSHAKING:
            conn.receive_message(response(_sent(conn, Identity).id, 0, None), now)
    assert conn.state is ConnectionState.OPEN
    conn.data_to_send()
    conn.events()
    handle = conn.rpc("echo", [7], now=now)
    conn.receive_message(response(_sent(conn, Rpc).id, 0, 7), now)
    events = conn.events()
    assert [(type(e), e.handle, e.status, e.data.value) for e in events  # type: ignore[attr-defined]
            ] == [(RequestCompleted, handle, 0, 7)]


STATES = st.sampled_from(["open", "handshaking", "challenged"])


@settings(max_examples=500, deadline=None)
@given(state=STATES, frames=st.lists(st.binary(max_size=64), max_size=4))
def test_arbitrary_bytes_raise_only_protocol_error(state: str, frames: list[bytes]) -> None:
    conn = _conn_in(state)
    broken = False
    for frame in frames:
        broken |= _feed(conn, frame)
    _assert_usable(conn, broken)


def _mutate(frame: bytes, data: st.DataObject) -> bytes:
    buf = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and buf:
            del buf[pos]
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


def _valid_frames() -> list[bytes]:
    one = (1).to_bytes(8, "big")
    two = (2).to_bytes(8, "big")
    return [
        *GOLDEN_FRAMES,
        response(one, 0, [["a"], ["b"]]), response(one, 11, b"abcd"), response(one, 10, "no"),
        response(two, 0, 3), response(CONNECTION_ID, 11, b"abcd"),
        Ack((3).to_bytes(8, "big")).encode(), Ack2(one).encode(),
        Rpc(one, "add", Payload.of_args([1]), "mycomp").encode(),
        Admin(one, "t", {"cmd": "subscribe", "msg_from": 0.0, "rmark": [1]}).encode(),
    ]


@settings(max_examples=500, deadline=None)
@given(state=STATES, data=st.data())
def test_mutated_frames_raise_only_protocol_error(state: str, data: st.DataObject) -> None:
    conn = _conn_in(state)
    frames = _valid_frames()
    broken = False
    for _ in range(data.draw(st.integers(1, 4))):
        frame = data.draw(st.sampled_from(frames))
        if data.draw(st.booleans()):
            frame = _mutate(frame, data)
        broken |= _feed(conn, frame)
    _assert_usable(conn, broken)


@settings(max_examples=200, deadline=None)
@given(topic=st.text(max_size=30), args=st.lists(VALUES, max_size=4), qos=st.integers(0, 2))
def test_publish_frames_equal_the_codec(topic: str, args: list[Any], qos: int) -> None:
    msg_id = bytes(range(8))
    conn = ClientConnection(None, id_factory=lambda n: msg_id)
    conn.connect(0.0)
    conn.publish(topic, tuple(args), qos=qos, now=0.0)
    flags = (0, 0x10, 0x30)[qos]
    expected = Pub(topic, Payload.of_args(args), msg_id if qos else None, flags).encode()
    assert conn.data_to_send() == [expected]
