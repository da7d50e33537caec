"""The broker's Router through its sans-IO API."""

from __future__ import annotations

import math
from collections.abc import Collection

import pytest

import rembus_proto as rp
from rembus_proto import Status
from rembus_proto.broker import CLOSE_OVERWRITTEN, CLOSE_SLOW_CONSUMER, RouterConfig
from rembus_proto.broker.timers import COMPACT_MARGIN
from rembus_proto.security_port import ECDSA, PublicKey
from rembus_proto.store import MemoryStore, StoredMessage
from router_harness import Net

INF = math.inf


def test_anonymous_pub_sub_forwards_the_frame_untouched() -> None:
    net = Net()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("temp")
    frame = rp.encode(rp.Pub("temp", rp.Payload.of([1, 21.5, "x"])))
    pub.send(frame)
    assert sub.inbox == [frame]
    assert pub.inbox == []


def test_publisher_never_receives_its_own_message() -> None:
    net = Net()
    both = net.connect()
    both.subscribe("t")
    both.publish("t", 1)
    assert both.pubs() == []


def test_non_reactive_subscriber_gets_nothing() -> None:
    net = Net()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("t", reactive=False)
    pub.publish("t", 1)
    assert sub.pubs() == []
    sub.reactive(True)
    pub.publish("t", 2)
    assert sub.pubs() == [("t", (2,))]


def test_unsubscribe_stops_delivery() -> None:
    net = Net()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("t")
    assert sub.admin("t", {"cmd": "unsubscribe"}).status == 0
    pub.publish("t", 1)
    assert sub.pubs() == []
    # unsubscribing what is not subscribed is not an error (idempotent)
    assert sub.admin("t", {"cmd": "unsubscribe"}).status == 0


def test_named_login_and_duplicate_name() -> None:
    net = Net()
    first = net.connect()
    ok = first.identify("comp")
    assert ok.status == 0 and ok.data.value is None
    second = net.connect()
    refused = second.identify("comp")
    assert (refused.status, refused.data.value) == (Status.GENERIC_ERROR, "already connected")
    assert net.connect().identify("").data.value == "empty cid"


def test_overwrite_connection_closes_the_old_one() -> None:
    net = Net(RouterConfig(overwrite_connection=True))
    first = net.named("comp")
    second = net.connect()
    assert second.identify("comp").status == 0
    assert [(c.conn, c.code, c.reason) for c in net.closes] == [
        (first.conn, CLOSE_OVERWRITTEN, "overwritten")]


def test_julia_url_cid_is_normalised() -> None:
    net = Net()
    peer = net.connect()
    assert peer.identify("ws://127.0.0.1:8338/jlcomp").status == 0
    assert peer.conn.twin.name == "jlcomp"


def test_qos1_ack_resend_and_give_up() -> None:
    net = Net(RouterConfig(ack_timeout=2.0, send_retries=2))
    sub, pub = net.connect(), net.connect()
    sub.subscribe("t")
    msg_id = pub.publish("t", 1, qos=1)
    assert pub.take() == [rp.Ack(msg_id)]  # type: ignore[arg-type]
    first = sub.take()
    assert len(first) == 1 and isinstance(first[0], rp.Pub) and first[0].qos == 1
    net.advance(2.0)
    assert sub.take() == first  # the same id again
    net.advance(2.0)
    assert sub.take() == first
    net.advance(2.0)
    assert sub.take() == []  # gave up after 2 resends


def test_qos2_dedup_from_publisher_and_ack2_to_subscriber() -> None:
    net = Net()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("t")
    msg_id = pub.publish("t", "x", qos=2)
    assert msg_id is not None
    assert pub.take() == [rp.Ack(msg_id)]
    # the publisher did not see the ACK and sends the same id again
    pub.send(rp.Pub("t", rp.Payload.of(["x"]), msg_id, rp.QOS2))
    assert pub.take() == [rp.Ack(msg_id)]
    delivered = sub.take()
    assert len(delivered) == 1
    sub.send(rp.Ack(msg_id))
    assert sub.take() == [rp.Ack2(msg_id)]
    pub.send(rp.Ack2(msg_id))
    net.advance(10.0)
    assert sub.take() == []  # acknowledged: never sent again


def test_qos2_ids_of_a_named_publisher_outlive_a_restart_within_the_window() -> None:
    net = Net(RouterConfig(qos2_dedup_size=2))
    sub = net.connect()
    sub.subscribe("t")
    pub = net.named("pub")
    ids = [pub.publish("t", n, qos=2) for n in range(3)]  # the first leaves the window
    pub.send(rp.Ack2(ids[2]))  # type: ignore[arg-type]
    assert [m for m in pub.take() if isinstance(m, rp.Ack)] == [rp.Ack(i) for i in ids]
    assert [args for _, args in sub.pubs()] == [(0,), (1,), (2,)]
    net.restart()
    assert net.store.load_qos2() == [("pub", ids[1])]
    sub = net.connect()
    sub.subscribe("t")
    pub = net.named("pub")
    for n, msg_id in enumerate(ids):  # resends of all three
        pub.send(rp.Pub("t", rp.Payload.of([n]), msg_id, rp.QOS2))
    assert [args for _, args in sub.pubs()] == [(0,), (2,)]  # only id 1 is still held


def test_qos2_duplicate_suppression_is_bounded_in_size_and_age() -> None:
    net = Net(RouterConfig(qos2_dedup_size=3, qos2_dedup_age=60.0))
    pub = net.connect()
    ids = [pub.publish("t", n, qos=2) for n in range(5)]
    net.pump()
    seen = pub.conn.twin.qos2_seen
    assert list(seen) == ids[2:]  # the oldest went first
    net.advance(61.0)
    fresh = pub.publish("t", 5, qos=2)
    net.pump()
    assert list(seen) == [fresh]  # the others were too old


def test_rpc_is_forwarded_with_a_broker_id_and_answered() -> None:
    net = Net()
    exposer, caller = net.connect(), net.connect()
    exposer.expose("add")
    req_id = caller.rpc("add", 1, 2)
    (forwarded,) = exposer.take()
    assert isinstance(forwarded, rp.Rpc) and forwarded.topic == "add"
    assert forwarded.data.args == (1, 2) and forwarded.id != req_id
    exposer.send(rp.Response(forwarded.id, 0, rp.Payload.of(3)))
    answer = caller.response(req_id)
    assert answer.status == 0 and answer.data.value == 3


def test_rpc_error_statuses() -> None:
    net = Net()
    caller = net.connect()
    unknown = caller.response(caller.rpc("nosuch"))
    assert (unknown.status, unknown.data.value) == (Status.METHOD_NOT_FOUND,
                                                    "nosuch: method unknown")
    # the only exposer is the caller itself
    caller.expose("mine")
    status = caller.response(caller.rpc("mine")).status
    assert status == Status.METHOD_LOOPBACK
    # a named exposer that went away still counts as exposed: unavailable, not unknown
    away = net.named("away")
    away.expose("gone")
    away.close()
    assert caller.response(caller.rpc("gone")).status == Status.METHOD_UNAVAILABLE


def test_direct_calls() -> None:
    net = Net()
    caller = net.connect()
    calc = net.named("calc")
    calc.expose("add")
    unknown = caller.response(caller.rpc("add", 1, target="nobody"))
    assert (unknown.status, unknown.data.value) == (Status.TARGET_NOT_FOUND, "nobody")
    req = caller.rpc("add", 1, 2, target="calc")
    (forwarded,) = calc.take()
    assert isinstance(forwarded, rp.Rpc) and forwarded.target is None
    calc.send(rp.Response(forwarded.id, 0, rp.Payload.of(3)))
    assert caller.response(req).data.value == 3
    calc.close()
    down = caller.response(caller.rpc("add", 1, target="calc"))
    assert (down.status, down.data.value) == (Status.TARGET_DOWN, "calc")


def test_exposer_disconnect_fails_pending_calls_at_once() -> None:
    net = Net()
    exposer, caller = net.connect(), net.connect()
    exposer.expose("slow")
    req = caller.rpc("slow")
    exposer.close()
    answer = caller.response(req)
    assert answer.status == Status.METHOD_UNAVAILABLE
    assert "disconnected" in answer.data.value


@pytest.mark.parametrize("policy", ["first_up", "round_robin", "less_busy"])
def test_routing_policies(policy: str) -> None:
    net = Net(RouterConfig(policy=policy))  # type: ignore[arg-type]
    one, two = net.connect(), net.connect()
    one.expose("f")
    two.expose("f")
    caller = net.connect()
    for _ in range(4):
        caller.rpc("f")
    served = (len(one.take()), len(two.take()))
    assert served == {"first_up": (4, 0), "round_robin": (2, 2), "less_busy": (2, 2)}[policy]


def test_legacy_and_current_peers_interoperate() -> None:
    net = Net()
    old_exposer = net.connect(id_len=16)
    old_exposer.expose("add")
    caller = net.connect()
    req = caller.rpc("add", 1, 2)
    (forwarded,) = old_exposer.take()
    assert isinstance(forwarded, rp.Rpc) and len(forwarded.id) == 16
    old_exposer.send(rp.Response(forwarded.id, 0, rp.Payload.of(3)))
    assert caller.response(req).data.value == 3
    # a QoS publish reaches a 0.1.x subscriber as a plain 3-element PUB
    old_sub = net.connect(id_len=16)
    assert old_sub.admin("t", {"cmd": "add_interest", "retroactive": False}).status == 0
    old_sub.reactive(True)
    caller.publish("t", 5, qos=1)
    assert old_sub.inbox == [b"\x83\x01\x61t\x81\x05"]


def test_admin_commands() -> None:
    net = Net()
    peer = net.connect()
    assert peer.admin("t", {"cmd": "nonsense"}).status == Status.UNKNOWN_ADMIN_CMD
    assert peer.admin("t", {"nocmd": 1}).status == Status.GENERIC_ERROR
    assert peer.admin("t", {"cmd": "subscribe", "msg_from": "x"}).status == Status.GENERIC_ERROR
    assert peer.admin("add", {"cmd": "add_impl"}).status == 0
    assert peer.admin("add", {"cmd": "remove_impl"}).status == 0
    assert peer.admin("__config__", {"cmd": "setup", "exposers": ["e"],
                                     "subscribers": ["s"]}).status == 0
    assert peer.conn.twin.reactive and list(peer.conn.twin.exposed) == ["e"]
    assert "s" in peer.conn.twin.subs


def test_builtin_methods() -> None:
    net = Net(RouterConfig(name="mybroker", version="9.9"))
    caller = net.connect()
    assert caller.response(caller.rpc("rid")).data.value == "mybroker"
    assert caller.response(caller.rpc("version")).data.value == "9.9"
    net.now += 42
    assert caller.response(caller.rpc("uptime")).data.value == "up for 42 seconds"


def test_retroactive_subscriber_gets_missed_messages_in_order_once() -> None:
    net = Net()
    sub = net.named("sub")
    sub.subscribe("t", msg_from=INF)
    sub.close()
    pub = net.connect()
    for i in range(5):
        pub.publish("t", i)
    sub = net.named("sub")
    assert sub.pubs() == []  # not reactive yet
    sub.reactive(True)
    assert sub.pubs() == [("t", (i,)) for i in range(5)]
    sub.close()
    sub = net.named("sub")
    sub.reactive(True)
    assert sub.pubs() == []  # delivered once


def test_retroactive_delivery_survives_a_broker_restart() -> None:
    net = Net()
    sub = net.named("sub")
    sub.subscribe("t", msg_from=INF)
    sub.close()
    pub = net.connect()
    pub.publish("t", "a")
    pub.publish("t", "b")
    net.restart()
    pub = net.connect()
    pub.publish("t", "c")  # the restarted broker still knows "sub" wants "t"
    sub = net.named("sub")
    sub.reactive(True)
    assert sub.pubs() == [("t", ("a",)), ("t", ("b",)), ("t", ("c",))]


def test_non_retroactive_subscriber_gets_only_live_messages() -> None:
    net = Net()
    sub = net.named("sub")
    sub.subscribe("t", msg_from=0.0)
    sub.close()
    net.connect().publish("t", 1)
    sub = net.named("sub")
    sub.reactive(True)
    assert sub.pubs() == []
    assert net.store.messages == []  # nothing archived when no one needs it


def test_msg_from_window_limits_the_replay() -> None:
    net = Net()
    sub = net.named("sub")
    sub.subscribe("t", msg_from=10e9)  # ten seconds
    sub.close()
    pub = net.connect()
    pub.publish("t", "old")
    net.advance(20.0)
    pub.publish("t", "new")
    sub = net.named("sub")
    sub.reactive(True)
    assert sub.pubs() == [("t", ("new",))]


def test_mark_advances_only_when_written_or_acked() -> None:
    net = Net()
    sub = net.named("sub")
    sub.subscribe("t", msg_from=INF)
    pub = net.connect()
    pub.publish("t", 1, qos=1)
    twin = sub.conn.twin
    delivered = sub.take()
    assert twin.mark == 0 and len(delivered) == 1  # written, but not acknowledged yet
    # the subscriber drops before acknowledging: the message comes back
    sub.close()
    sub = net.named("sub")
    sub.reactive(True)
    pubs = [m for m in sub.take() if isinstance(m, rp.Pub)]
    assert [p.data.args for p in pubs] == [(1,)]
    sub.send(rp.Ack(pubs[0].id))  # type: ignore[arg-type]
    assert sub.conn.twin.mark == 1


def test_qos2_replay_is_delivered_exactly_once() -> None:
    net = Net()
    sub = net.named("sub")
    sub.subscribe("t", msg_from=INF)
    sub.close()
    pub = net.connect()
    msg_id = pub.publish("t", "once", qos=2)
    sub = net.named("sub")
    sub.reactive(True)
    (pubmsg,) = [m for m in sub.take() if isinstance(m, rp.Pub)]
    assert pubmsg.qos == 2 and pubmsg.id == msg_id
    sub.send(rp.Ack(msg_id))  # type: ignore[arg-type]
    assert sub.take() == [rp.Ack2(msg_id)]  # type: ignore[arg-type]
    sub.close()
    sub = net.named("sub")
    sub.reactive(True)
    assert sub.pubs() == []


class CountingStore(MemoryStore):
    """Counts the store queries of replays."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def replay(self, after_seq: int, topics: Collection[str] | None,
               limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        self.queries += 1
        return super().replay(after_seq, topics, limit, max_bytes)


def test_a_qos1_replay_queries_the_store_once_per_batch_not_once_per_ack() -> None:
    store = CountingStore()
    net = Net(RouterConfig(max_inflight=4, replay_batch=50), store=store)
    sub = net.named("sub")
    sub.subscribe("t", msg_from=INF)
    sub.close()
    pub = net.connect()
    for i in range(40):
        pub.publish("t", i, qos=1)
    sub = net.named("sub")
    store.queries = 0
    sub.reactive(True)
    got: list[int] = []
    for _ in range(40):  # a window of 2 in flight: every ACK lets one more go
        pubs = [m for m in sub.take() if isinstance(m, rp.Pub)]
        if not pubs:
            break
        for message in pubs:
            got.append(message.data.args[0])
            sub.send(rp.Ack(message.id))  # type: ignore[arg-type]
    assert got == list(range(40))
    assert store.queries == 1  # 40 rows: a single batch


def test_replay_is_paced_by_drain() -> None:
    net = Net(RouterConfig(replay_batch=10))
    sub = net.named("sub")
    sub.subscribe("t", msg_from=INF)
    sub.close()
    pub = net.connect()
    for i in range(25):
        pub.publish("t", i)
    net.auto_drain = False
    sub = net.named("sub")
    sub.reactive(True)
    assert len(sub.pubs()) == 10
    pub.publish("t", 99)  # live message waits behind the replay
    assert sub.pubs() == []
    net.router.drained(sub.conn, net.now)
    net.pump()
    assert len(sub.pubs()) == 10
    net.router.drained(sub.conn, net.now)
    net.pump()
    assert [a for _, (a,) in sub.pubs()] == [20, 21, 22, 23, 24, 99]


def test_retention_prunes_old_messages() -> None:
    net = Net(RouterConfig(retention_max_age=100.0, retention_max_per_topic=3,
                           prune_interval=10.0))
    sub = net.named("sub")
    sub.subscribe("t", msg_from=INF)
    sub.close()
    pub = net.connect()
    for i in range(5):
        pub.publish("t", i)
    net.advance(10.0)
    assert [m.payload for m in net.store.messages] == [rp.Payload.of([i]).raw for i in (2, 3, 4)]
    net.advance(200.0)
    assert net.store.messages == []


def test_wildcard_subscriptions() -> None:
    net = Net()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("house/*/temp")
    sub.subscribe("garden/**")
    pub.publish("house/kitchen/temp", 21.5)
    pub.publish("house/a/b/temp", 1)
    pub.publish("garden/x/y", 2)
    assert sub.pubs() == [("house/*/temp", ("house/kitchen/temp", 21.5)),
                          ("garden/**", ("garden/x/y", 2))]


def test_tenants_are_isolated() -> None:
    net = Net()
    sub = net.named("sub.acme")
    sub.subscribe("t")
    net.named("pub.other").publish("t", 1)
    net.connect().publish("t", 2)
    net.named("pub.acme").publish("t", 3)
    assert sub.pubs() == [("t", (3,))]


def test_slow_consumer_is_disconnected() -> None:
    net = Net(RouterConfig(max_inflight=3))
    sub, pub = net.connect(), net.connect()
    sub.subscribe("t")
    for i in range(4):
        pub.publish("t", i, qos=1)
    assert [(c.conn, c.code) for c in net.closes] == [(sub.conn, CLOSE_SLOW_CONSUMER)]


def test_register_without_security_setup_gets_a_clear_error() -> None:
    net = Net()
    peer = net.connect()
    res = peer.request(lambda i: rp.Register(i, "x", "1234", b"key", 1))
    assert (res.status, res.data.value) == (Status.GENERIC_ERROR, "tenant [.] not enabled")


def test_malformed_input_raises_protocol_error_and_leaves_state() -> None:
    net = Net()
    sub, bad, pub = net.connect(), net.connect(), net.connect()
    sub.subscribe("t")
    with pytest.raises(rp.ProtocolError):
        net.router.receive(bad.conn, b"\x83\x01\x61", net.now)
    pub.publish("t", 1)
    assert sub.pubs() == [("t", (1,))]


def test_receive_many_is_receive_one_by_one() -> None:
    frames = [rp.Pub("t", rp.Payload.of([i])).encode() for i in range(3)]
    frames.insert(1, rp.Pub("t", rp.Payload.of(["qos"]), b"\x09" * 8, rp.QOS1).encode())
    outcomes = []
    for batched in (False, True):
        net = Net()
        sub, pub = net.connect(), net.connect()
        sub.subscribe("t")
        if batched:
            net.router.receive_many(pub.conn, frames, net.now)
        else:
            for frame in frames:
                net.router.receive(pub.conn, frame, net.now)
        net.pump()
        outcomes.append((sub.pubs(), pub.take()))
    assert outcomes[0] == outcomes[1]
    assert [args for _, args in outcomes[0][0]] == [(0,), ("qos",), (1,), (2,)]
    net = Net()
    bad = net.connect()
    with pytest.raises(rp.ProtocolError):
        net.router.receive_many(bad.conn, [frames[0], b"\x83\x01\x61"], net.now)


class _Counted(str):
    """A topic that counts how often it is compared for equality."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _Counted.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_setup_is_linear_in_the_methods_it_lists() -> None:
    """Each exposed method costs O(1): no scan of the methods exposed before it."""
    net = Net()
    peer = net.named("many")
    methods = [_Counted(f"m{n}") for n in range(2_000)]
    _Counted.compared = 0
    net.router._admin.receive(peer.conn, rp.Admin(peer.new_id(), "__config__", {
        "cmd": "setup", "exposers": methods, "subscribers": methods}))
    net.pump()
    assert _Counted.compared < 2 * len(methods)  # a scan per method would be ~2,000,000
    assert list(peer.conn.twin.exposed) == methods and list(peer.conn.twin.subs) == methods


def test_pending_calls_have_a_broker_wide_cap() -> None:
    net = Net(RouterConfig(max_pending_calls_total=3))
    exposer = net.connect()
    exposer.expose("slow")
    callers = [net.connect() for _ in range(2)]
    for n in range(3):
        callers[n % 2].rpc("slow", n)
    net.pump()
    refused = callers[1].rpc("slow", 3)
    net.pump()
    assert callers[1].response(refused).status == Status.GENERIC_ERROR
    assert len(exposer.take()) == 3  # the refused call never reached the exposer
    net.advance(RouterConfig().call_timeout + 1)  # the calls are forgotten: room again
    callers[0].rpc("slow", 4)
    net.pump()
    (forwarded,) = exposer.take()
    assert isinstance(forwarded, rp.Rpc) and forwarded.data.value == [4]


def test_timers_cost_what_is_due_not_what_is_open() -> None:
    """Idle connections put nothing on the timer heap; answered calls leave a heap
    bounded by a constant factor of what is open."""
    net = Net()
    idle = [net.connect() for _ in range(200)]
    net.advance(5.0)
    assert len(net.router._effects.timers) == 0 and all(not p.conn.closed for p in idle)
    exposer, caller = net.connect(), net.connect()
    exposer.expose("f")
    for n in range(5_000):
        caller.rpc("f", n)
        net.pump()
        (forwarded,) = exposer.take()
        assert isinstance(forwarded, rp.Rpc)
        exposer.send(rp.Response(forwarded.id, 0, rp.Payload.of(n)))
    net.pump()
    assert len(net.router._effects.timers) <= COMPACT_MARGIN + 1


def test_twins_away_longer_than_the_retention_are_forgotten() -> None:
    """A throwaway name is forgotten after the retention; one that may be owed stored
    messages, a registered one and a connected one are kept."""
    net = Net(RouterConfig(twin_retention=100.0))
    for name in ("throwaway", "owed", "registered"):
        peer = net.named(name)
        if name == "owed":
            peer.subscribe("news", msg_from=math.inf)
        peer.close()
    net.router.guard.security.save_key("registered", PublicKey(b"key", ECDSA))
    net.named("publisher").publish("news", 1)
    here = net.named("here")
    net.advance(50.0)
    assert {"throwaway", "owed", "registered", "here"} <= set(net.router.twins)
    net.advance(51.0)
    assert set(net.router.twins) == {"owed", "registered", "here", "publisher"}
    net.store.commit()
    assert "throwaway" not in {record.name for record in net.store.load()[1]}
    assert here.rpc("version") and not here.conn.closed
