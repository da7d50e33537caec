"""Shared security and less_busy on the sans-IO core: deferred registration and key
lookups, other brokers trusted on private topics, per-method load; the broker choice."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rembus_proto as rp
from rembus_proto import Status
from rembus_proto.broker import Router
from rembus_proto.broker.actions import Forward, NeedKey, SaveKey
from rembus_proto.broker.requests import answer_requests
from rembus_proto.security_port import MemorySecurity
from rembus_proto.store import MemoryStore
from security_helpers import SecureNet, public_key

pytest.importorskip("nats")
from rembus.broker.cluster.load import VALID_INTERVALS, LoadBoard  # needs nats-py
from rembus.broker.cluster.subjects import SubjectSpace


def deferred() -> SecureNet:
    net = SecureNet()
    net.router.use_security(net.security, deferred_keys=True)
    return net


@pytest.mark.parametrize(("refusal", "taken", "status", "value"), [
    (None, False, Status.OK, None),
    (None, True, Status.NAME_ALREADY_TAKEN, "name alice already registered"),
    ("cluster unavailable, try again later", False, Status.GENERIC_ERROR,
     "cluster unavailable, try again later"),
])
def test_register_waits_for_the_save_key_order(refusal: str | None, taken: bool,
                                               status: int, value: str | None) -> None:
    net = deferred()
    peer = net.connect()
    key = public_key()
    msg_id = peer.new_id()
    peer.send(rp.Register(msg_id, "alice", "1234", key.data, key.keytype))
    assert peer.inbox == []  # not answered before the save
    saves = [order for order in net.orders if isinstance(order, SaveKey)]
    assert saves == [SaveKey(peer.conn, msg_id, "alice", key)]
    assert net.security.public_key("alice") is None  # the port was not written
    net.router.key_saved(peer.conn, msg_id, "alice", refusal, taken, net.now)
    net.pump()
    reply = peer.response(msg_id)
    assert (reply.status, reply.data.value) == (status, value)


def test_a_wrong_pin_is_refused_before_any_save() -> None:
    net = deferred()
    key = public_key()
    reply = net.connect().request(lambda i: rp.Register(i, "alice", "0000", key.data,
                                                        key.keytype))
    assert reply.status == Status.GENERIC_ERROR
    assert not [order for order in net.orders if isinstance(order, SaveKey)]


def test_a_deferred_key_lookup_holds_the_login_until_answered() -> None:
    security = MemorySecurity(keys={"alice": public_key()})
    router = Router(MemoryStore(), security=security)
    conn = router.connect(0.0)
    taken: list[NeedKey] = []
    router.receive(conn, rp.encode(rp.Identity(b"\x01" * 8, "alice")), 0.0)
    answer_requests(router, MemoryStore(), security, 0.0,
                    defer_key=lambda request: taken.append(request) is None)
    assert [request.name for request in taken] == ["alice"]
    assert router.data_to_send() == []  # held
    router.key_found(conn, "alice", security.public_key("alice"), 0.0)
    (_, frames), = router.data_to_send()
    assert rp.decode(frames[0]).status == Status.CHALLENGE  # type: ignore[union-attr]


def test_other_brokers_are_trusted_on_private_topics() -> None:
    net = SecureNet(security=MemorySecurity(tenants={".": "1234"},
                                            topics={"secret": {"alice"}}))
    net.register("alice")
    alice = net.login("alice")
    net.router.join_cluster()
    alice.subscribe("secret")
    alice.take()
    net.router.remote_publish(".", "secret", rp.Payload.of(["from b"]).raw, net.now)
    net.pump()
    assert alice.pubs() == [("secret", ("from b",))]
    alice.publish("secret", "from a")  # crosses brokers: the others check their own
    assert [f.topic for f in net.orders if isinstance(f, Forward)] == ["secret"]
    alice.expose("secret")
    net.router.remote_request(".", "secret", None, rp.Payload.of([]).raw, b"\x07" * 8,
                              net.now)
    net.pump()
    assert [m.topic for m in alice.take() if isinstance(m, rp.Rpc)] == ["secret"]


def test_load_is_the_least_busy_exposer_of_the_tenant() -> None:
    net = SecureNet()
    router = net.router
    assert router.load(".", "work") is None
    busy, idle, caller = net.connect(), net.connect(), net.connect()
    busy.expose("work")
    for _ in range(2):
        caller.send(rp.Rpc(caller.new_id(), "work", rp.Payload.of([])))
    assert router.load(".", "work") == 2  # both calls wait at the only exposer
    idle.expose("work")
    assert router.load(".", "work") == 0
    assert router.load("acme", "work") is None


reports = st.dictionaries(st.sampled_from("abcdef"),
                          st.tuples(st.integers(0, 5), st.floats(0, 12)), max_size=6)


@given(reports, st.floats(0, 12))
def test_the_chosen_broker_has_the_fewest_calls_among_valid_reports(
        by_broker: dict[str, tuple[int, float]], now: float) -> None:
    board = LoadBoard(Router(MemoryStore()), SubjectSpace("c"), "me", interval=1.0)
    for broker, (load, received) in by_broker.items():
        board.received(board.space.load(".", "m"), broker, str(load).encode(), received)
    valid = {broker: load for broker, (load, received) in by_broker.items()
             if received + VALID_INTERVALS >= now}
    chosen = board.pick(".", "m", now)
    if not valid:
        assert chosen is None
    else:
        assert chosen is not None and valid[chosen] == min(valid.values())
    assert board.pick("other", "m", now) is None
