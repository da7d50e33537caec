"""The broker core's contract, sans-IO: data requests, Guard decisions, clocks, BrokerPeer."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import rembus_proto as rp
from rembus_proto.broker import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SLOW_CONSUMER,
    Close,
    Connection,
    Guard,
    NeedKey,
    NeedReplay,
    PruneArchive,
    RegexMatcher,
    Router,
    RouterConfig,
    SubscriptionIndex,
    Twin,
)
from rembus_proto.broker.auth import DONE, Bind, LookUpKey
from rembus_proto.broker.effects import Effects
from rembus_proto.broker.peer import BrokerPeer
from rembus_proto.security_port import RSA, MemorySecurity, PublicKey
from rembus_proto.store import MemoryStore
from rembus_proto.topics import compile_pattern
from rembus_proto.ws import ClientWebSocket, WSConfig
from rembus_proto.wsevents import Opened, WsMessage
from ws_helpers import feed, sent

KEY = PublicKey(b"key", RSA)
CONFIG = "__config__"


class Driver:
    """A router driven by hand: every data request is kept for the test to answer."""

    def __init__(self, config: RouterConfig | None = None,
                 security: MemorySecurity | None = None) -> None:
        self.store = MemoryStore()
        self.security = security or MemorySecurity()
        counter = itertools.count(1)
        self.router = Router(self.store, config, now=10.0, security=self.security,
                             id_factory=lambda n: next(counter).to_bytes(n, "little"))
        self.ids = itertools.count(1)
        self.inbox: dict[Connection, list[rp.Message]] = {}

    def send(self, conn: Connection, message: rp.Message, now: float = 10.0,
             wall: float | None = None) -> list[Any]:
        self.router.receive(conn, rp.encode(message), now, wall)
        return self.settle()

    def settle(self) -> list[Any]:
        """Collect output; return the events."""
        for conn, frames in self.router.data_to_send():
            self.inbox.setdefault(conn, []).extend(rp.decode(f) for f in frames)
        return self.router.events()

    def take(self, conn: Connection) -> list[rp.Message]:
        return self.inbox.pop(conn, [])

    def new_id(self) -> bytes:
        return next(self.ids).to_bytes(8, "little")

    def admin(self, conn: Connection, topic: str, command: dict[str, Any]) -> list[Any]:
        return self.send(conn, rp.Admin(self.new_id(), topic, command))

    def named(self, name: str) -> Connection:
        conn = self.router.connect(10.0)
        events = self.send(conn, rp.Identity(self.new_id(), name))
        assert events == [NeedKey(conn, name)]
        self.router.key_found(conn, name, None, 10.0)
        self.settle()
        assert [m.status for m in self.take(conn)] == [0]  # type: ignore[union-attr]
        return conn


def answer_replay(driver: Driver, request: NeedReplay) -> None:
    batch = driver.store.replay(request.after_seq, request.topics, request.limit)
    driver.router.replay_batch(request, batch, 10.0)


def test_a_returning_subscriber_gets_stored_messages_through_a_replay_request() -> None:
    d = Driver()
    sub = d.named("sub")
    d.admin(sub, "t", {"cmd": "subscribe", "msg_from": math.inf})
    d.router.disconnect(sub, 10.0)
    pub = d.router.connect(10.0)
    d.send(pub, rp.Pub("t", rp.Payload.of([1])))
    d.send(pub, rp.Pub("t", rp.Payload.of([2])))
    sub = d.named("sub")
    events = d.admin(sub, CONFIG, {"cmd": "reactive", "status": True})
    twin = d.router.twins["sub"]
    assert events == [NeedReplay(twin, twin.replay_token, 0, {"t"}, 500)]
    assert [type(m) for m in d.take(sub)] == [rp.Response]  # nothing read from the store yet
    answer_replay(d, events[0])
    assert d.settle() == []
    assert [m.data.args for m in d.take(sub)] == [(1,), (2,)]  # type: ignore[union-attr]
    assert not twin.replaying


def test_a_late_replay_answer_is_ignored() -> None:
    d = Driver()
    sub = d.named("sub")
    d.admin(sub, "t", {"cmd": "subscribe", "msg_from": math.inf})
    d.router.disconnect(sub, 10.0)
    d.send(d.router.connect(10.0), rp.Pub("t", rp.Payload.of([1])))
    sub = d.named("sub")
    (request,) = d.admin(sub, CONFIG, {"cmd": "reactive", "status": True})
    d.router.disconnect(sub, 10.0)  # gone before the driver answered
    sub = d.named("sub")
    answer_replay(d, request)
    assert d.settle() == [] and d.take(sub) == []


def test_a_full_batch_waits_for_the_socket_to_drain() -> None:
    d = Driver(RouterConfig(replay_batch=2))
    sub = d.named("sub")
    d.admin(sub, "t", {"cmd": "subscribe", "msg_from": math.inf})
    d.router.disconnect(sub, 10.0)
    pub = d.router.connect(10.0)
    for i in range(3):
        d.send(pub, rp.Pub("t", rp.Payload.of([i])))
    sub = d.named("sub")
    (request,) = d.admin(sub, CONFIG, {"cmd": "reactive", "status": True})
    answer_replay(d, request)
    assert d.settle() == [] and sub.waiting_drain
    d.router.drained(sub, 10.0)
    (request,) = d.settle()
    assert isinstance(request, NeedReplay) and request.after_seq == 2
    answer_replay(d, request)
    d.settle()
    assert [m.data.args for m in d.take(sub) if isinstance(m, rp.Pub)] == [(0,), (1,), (2,)]


def test_input_waits_for_the_key_and_keeps_its_order() -> None:
    d = Driver()
    conn = d.router.connect(10.0)
    ident, sub = d.new_id(), d.new_id()
    d.router.receive_many(conn, [rp.encode(rp.Identity(ident, "alice")),
                                 rp.encode(rp.Admin(sub, "t", {"cmd": "subscribe"}))], 10.0)
    assert d.settle() == [NeedKey(conn, "alice")]
    assert d.take(conn) == [] and not conn.twin.named
    d.router.receive(conn, rp.encode(rp.Pub("t", rp.Payload.of([1]))), 10.0)  # held too
    d.router.key_found(conn, "alice", None, 10.0)
    assert d.settle() == []
    assert [(m.id, m.status) for m in d.take(conn)] == [(ident, 0), (sub, 0)]  # type: ignore
    assert conn.twin.name == "alice" and "t" in conn.twin.subs


def test_a_registered_key_gets_a_challenge_after_the_lookup() -> None:
    d = Driver(security=MemorySecurity(keys={"alice": KEY}))
    conn = d.router.connect(10.0)
    assert d.send(conn, rp.Identity(d.new_id(), "alice")) == [NeedKey(conn, "alice")]
    d.router.key_found(conn, "alice", KEY, 10.0)
    d.settle()
    (reply,) = d.take(conn)
    assert isinstance(reply, rp.Response) and reply.status == rp.Status.CHALLENGE


def test_held_input_is_bounded() -> None:
    d = Driver(RouterConfig(max_held=2))
    conn = d.router.connect(10.0)
    d.send(conn, rp.Identity(d.new_id(), "alice"))
    frame = rp.encode(rp.Pub("t", rp.Payload.of([1])))
    d.router.receive_many(conn, [frame, frame], 10.0)
    assert d.settle() == [Close(conn, CLOSE_SLOW_CONSUMER, "too many messages while logging in")]


def test_a_malformed_held_message_closes_with_an_event_not_an_exception() -> None:
    d = Driver()
    conn = d.router.connect(10.0)
    d.router.receive_many(conn, [rp.encode(rp.Identity(d.new_id(), "alice")), b"\x83\x01\x61"],
                          10.0)
    d.settle()
    d.router.key_found(conn, "alice", None, 10.0)
    (close,) = d.settle()
    assert isinstance(close, Close) and close.code == CLOSE_PROTOCOL_ERROR


def test_stored_messages_carry_the_wall_clock_and_pruning_uses_it() -> None:
    config = RouterConfig(prune_interval=5.0, retention_max_age=100.0)
    d = Driver(config)
    sub = d.named("sub")
    d.admin(sub, "t", {"cmd": "subscribe", "msg_from": math.inf})
    d.send(d.router.connect(10.0), rp.Pub("t", rp.Payload.of([1])), now=11.0,
           wall=1_700_000_000.0)
    assert d.store.messages[0].recv_ns == 1_700_000_000 * 10**9
    d.router.handle_timer(20.0, 1_700_000_500.0)
    assert d.settle() == [PruneArchive(1_700_000_400 * 10**9, config.retention_max_per_topic,
                                       config.retention_max_bytes,
                                       config.retention_max_total_bytes)]


# -- the Guard alone ------------------------------------------------------------

def good_signature(key: PublicKey, signed: bytes, signature: bytes) -> bool:
    return signature == b"good"


def make_guard(**keys: PublicKey) -> tuple[Guard, Effects, Connection]:
    config = RouterConfig()
    effects = Effects(config, 0.0, 0.0)
    guard = Guard(config, effects, MemorySecurity(keys=keys), good_signature,
                  lambda n: b"\x07" * n)
    conn = Connection(Twin("anon", False), "test")
    return guard, effects, conn


def test_the_guard_asks_for_a_key_then_decides_to_bind_a_free_name() -> None:
    guard, effects, conn = make_guard()
    assert guard.identify(conn, b"i" * 8, "bob") == LookUpKey("bob")
    guard.key_found(conn, "bob", None)
    assert guard.identify(conn, b"i" * 8, "bob") == Bind(b"i" * 8, "bob")
    assert guard.identify(conn, b"i" * 8, "bob") == LookUpKey("bob")  # answers are single-use
    assert effects.data_to_send() == [] and effects.events() == []


def test_the_guard_challenges_a_registered_name_and_binds_after_the_attestation() -> None:
    guard, effects, conn = make_guard(bob=KEY)
    guard.key_found(conn, "bob", KEY)
    assert guard.identify(conn, b"i" * 8, "bob") is DONE
    ((_, frames),) = effects.data_to_send()
    assert rp.decode(frames[0]) == rp.response_for(b"i" * 8, rp.Status.CHALLENGE, b"\x07" * 4)
    attestation = rp.Attestation(b"a" * 8, "bob", b"good")
    assert guard.receive(conn, attestation, 1.0) == LookUpKey("bob")
    guard.key_found(conn, "bob", KEY)
    decision = guard.receive(conn, attestation, 1.0)
    assert decision == Bind(b"a" * 8, "bob", True, None)
    assert isinstance(decision, Bind)
    guard.bound(conn, decision, True)
    assert conn in guard.authenticated


def test_the_guard_refuses_a_bad_signature_with_a_close() -> None:
    guard, effects, conn = make_guard(bob=KEY)
    guard.key_found(conn, "bob", KEY)
    guard.identify(conn, b"i" * 8, "bob")
    guard.key_found(conn, "bob", KEY)
    assert guard.receive(conn, rp.Attestation(b"a" * 8, "bob", b"bad"), 1.0) is DONE
    (close,) = effects.events()
    assert isinstance(close, Close) and close.reason == "signature verification failed"


# -- the subscription index --------------------------------------------------------

SEGMENT = st.sampled_from(["a", "b", "*", "**"])


@given(st.lists(st.lists(SEGMENT, min_size=1, max_size=3).map("/".join), max_size=6),
       st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=4).map("/".join))
def test_the_index_matches_what_each_pattern_matches(patterns: list[str], topic: str) -> None:
    index = SubscriptionIndex(RegexMatcher())
    twins = [Twin(f"t{i}", False) for i in range(len(patterns))]
    for pattern, twin in zip(patterns, twins, strict=True):
        index.add(pattern, twin, False)
    for pattern, twin in list(zip(patterns, twins, strict=True))[::2]:
        index.remove(pattern, twin, False)
    kept = [(p, t) for i, (p, t) in enumerate(zip(patterns, twins, strict=True)) if i % 2]
    expected = {p for p, _ in kept if "*" in p and compile_pattern(p).fullmatch(topic)}
    assert set(index.match(topic)) == expected
    for pattern in expected:
        assert set(index.pattern_subscribers(pattern)) == {t for p, t in kept if p == pattern}


# -- BrokerPeer: WebSocket, dialect, router feed ----------------------------------

def open_peer(router: Router) -> tuple[BrokerPeer, ClientWebSocket]:
    peer = BrokerPeer(router, WSConfig(), "test", max_backlog=1000)
    client = ClientWebSocket("127.0.0.1:8000")
    peer.receive_data(sent(client), 10.0)
    assert [type(e) for e in peer.events()] == [Opened]
    assert [type(e) for e in feed(client, b"".join(peer.data_to_send()))] == [Opened]
    return peer, client


def deliver(router: Router, peers: list[BrokerPeer]) -> None:
    by_conn = {p.conn: p for p in peers}
    for conn, frames in router.data_to_send():
        by_conn[conn].send(frames)


def test_the_peer_answers_in_the_dialect_last_heard() -> None:
    router = Driver().router
    sub, sub_ws = open_peer(router)
    pub, pub_ws = open_peer(router)
    sub_ws.send_message(rp.encode(rp.Admin(b"\x01" * 8, "t", {"cmd": "subscribe"})))
    sub_ws.send_message(rp.encode(rp.Admin(b"\x02" * 8, CONFIG,
                                           {"cmd": "reactive", "status": True})))
    sub_ws.send_message('{"jsonrpc":"2.0","method":"other","params":[0]}')
    sub.receive_data(sent(sub_ws), 10.0)
    pub_ws.send_message(rp.encode(rp.Pub("t", rp.Payload.of([1]))))
    pub.receive_data(sent(pub_ws), 10.0)
    deliver(router, [sub, pub])
    texts = [e.data for e in feed(sub_ws, b"".join(sub.data_to_send())) if isinstance(e, WsMessage)]
    assert all(isinstance(t, str) for t in texts)
    assert json.loads(texts[-1])["method"] == "t"


def test_the_peer_closes_on_a_malformed_message_and_on_a_backlog() -> None:
    router = Driver().router
    bad, bad_ws = open_peer(router)
    bad_ws.send_message(b"\x83\x01\x61")
    bad.receive_data(sent(bad_ws), 10.0)
    assert bad.finished and bad.problem
    closed = feed(bad_ws, b"".join(bad.data_to_send()))
    assert [getattr(e, "code", None) for e in closed] == [CLOSE_PROTOCOL_ERROR]
    slow, slow_ws = open_peer(router)
    assert not slow.check_backlog(1000)
    assert slow.check_backlog(1001) and slow.finished
    closed = feed(slow_ws, b"".join(slow.data_to_send()))
    assert [getattr(e, "code", None) for e in closed] == [CLOSE_SLOW_CONSUMER]
