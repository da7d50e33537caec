"""Kept publications, twins and replays of a router joined in a cluster, on the sans-IO core."""

from __future__ import annotations

import math
from typing import Any

import pytest

import rembus_proto as rp
from rembus_proto.broker.actions import (
    Forward,
    LeaseReleased,
    NeedLease,
    NeedReplay,
    TwinChanged,
)
from rembus_proto.store import StoredMessage, TwinRecord
from router_harness import Net, Peer
from test_cluster_router import orders


def cluster_net() -> Net:
    net = Net()
    net.replay_from_store = False  # the cluster's archive answers, in these tests
    net.router.join_cluster()
    return net


def login(net: Net, name: str, record: TwinRecord | None = None, last_seq: int = 0) -> Peer:
    peer = net.connect()
    msg_id = peer.new_id()
    peer.send(rp.Identity(msg_id, name))
    assert orders(net, NeedLease) == [NeedLease(peer.conn, name)]
    net.router.lease_found(peer.conn, name, None, net.now, None, record, (), last_seq)
    net.pump()
    assert peer.response(msg_id).status == 0
    return peer


def stored(seq: int, topic: str, value: Any, flags: int = 0, msg_id: bytes | None = None,
           publisher: str = "writer") -> StoredMessage:
    return StoredMessage(seq, 0, topic, flags, msg_id, rp.Payload.of([value]).raw, publisher)


def acks(peer: Peer) -> list[type[rp.Message]]:
    return [type(m) for m in peer.take() if isinstance(m, rp.Ack | rp.Ack2)]


@pytest.mark.parametrize("qos", [1, 2])
def test_a_qos_publication_is_acknowledged_once_the_archive_stored_it(qos: int) -> None:
    net = cluster_net()
    pub = net.connect()
    msg_id = pub.publish("t", 1, qos=qos)
    assert msg_id is not None
    assert acks(pub) == []
    (forward,) = orders(net, Forward)
    assert (forward.kept, forward.conn, forward.msg_id, forward.flags & 0x30) == (
        True, pub.conn, msg_id, 0x10 if qos == 1 else 0x30)
    if qos == 2:  # a resend before the ACK: forwarded again (the archive drops it), not ACKed
        pub.send(rp.Pub("t", rp.Payload.of([1]), msg_id, 0x30))
        assert acks(pub) == []
        assert [f.kept for f in orders(net, Forward)] == [True]
    net.router.cluster_acked(pub.conn, msg_id, net.now)
    net.pump()
    assert acks(pub) == [rp.Ack]


@pytest.mark.parametrize(("interest", "tenant", "topic", "kept"), [
    (None, ".", "room/kitchen", False),
    ("room/kitchen", ".", "room/kitchen", True),
    ("room/*", ".", "room/kitchen", True),
    ("room/*", ".", "hall", False),
    ("room/**", "other", "room/kitchen", False),  # another tenant's interest
])
def test_a_qos0_publication_is_kept_when_a_retroactive_subscription_wants_it(
        interest: str | None, tenant: str, topic: str, kept: bool) -> None:
    net = cluster_net()
    if interest is not None:
        net.router.cluster_retro(tenant, interest, 1)
    pub = net.connect()
    pub.publish(topic, 1)
    assert [f.kept for f in orders(net, Forward)] == [kept]
    if interest is not None:
        net.router.cluster_retro(tenant, interest, -1)  # gone: no longer kept
        pub.publish(topic, 2)
        assert [f.kept for f in orders(net, Forward)] == [False]


def test_kept_publications_reach_retroactive_twins_through_the_archive_only() -> None:
    net = cluster_net()
    keeper = login(net, "keeper")
    keeper.subscribe("t", msg_from=math.inf)
    (request,) = orders(net, NeedReplay)
    plain = net.connect()
    plain.subscribe("t")
    net.router.remote_publish(".", "t", rp.Payload.of([1]).raw, net.now, None, kept=True)
    net.router.remote_publish(".", "t", rp.Payload.of([2]).raw, net.now, None, kept=False)
    net.pump()
    assert plain.pubs() == [("t", (1,)), ("t", (2,))]
    assert keeper.pubs() == [("t", (2,))]  # not kept: live
    # the archive has it: the replay (which follows the archive) delivers it, then asks again
    net.router.replay_batch(request, [stored(request.after_seq + 1, "t", 1)], net.now)
    net.pump()
    assert keeper.pubs() == [("t", (1,))]
    (again,) = orders(net, NeedReplay)
    assert again.after_seq == request.after_seq + 1


def test_a_twin_from_the_cluster_replaces_ours_and_replays_from_its_mark() -> None:
    net = cluster_net()
    record = TwinRecord("keeper", {"t": math.inf, "u": 0.0}, [], 7, [], {"t": 3, "u": 3})
    keeper = login(net, "keeper", record, last_seq=20)
    keeper.reactive(True)
    (request,) = orders(net, NeedReplay)
    assert request.after_seq == 7
    assert net.router.twins["keeper"].subs == {"t": math.inf, "u": 0.0}
    net.router.replay_batch(request, [stored(9, "t", "missed")], net.now)
    net.pump()
    assert keeper.pubs() == [("t", ("missed",))]
    assert net.router.twins["keeper"].mark == 9
    # a new twin starts at the archive's last seq: owed what comes after its login
    assert login(net, "fresh", None, last_seq=20) is not None
    assert net.router.twins["fresh"].mark == 20


def test_leaving_saves_the_twin_before_the_lease_goes() -> None:
    net = cluster_net()
    keeper = login(net, "keeper")
    keeper.subscribe("t", msg_from=math.inf)
    net.orders.clear()
    keeper.close()
    relevant = [o for o in net.orders if isinstance(o, TwinChanged | LeaseReleased)]
    assert relevant == [TwinChanged("keeper"), LeaseReleased("keeper")]


def test_the_ack2_of_a_qos2_delivery_waits_for_the_stored_mark() -> None:
    net = cluster_net()
    keeper = login(net, "keeper")
    keeper.subscribe("t", msg_from=math.inf)
    (request,) = orders(net, NeedReplay)
    msg_ids = [bytes([i]) * 8 for i in (1, 2)]
    net.router.replay_batch(request, [stored(request.after_seq + 1 + i, "t", i, 0x30, msg_id)
                                      for i, msg_id in enumerate(msg_ids)], net.now)
    net.pump()
    assert [type(m) for m in keeper.take()] == [rp.Pub, rp.Pub]
    net.orders.clear()
    for msg_id in msg_ids:
        keeper.send(rp.Ack(msg_id))
    assert acks(keeper) == []  # the subscriber would forget the ids: not before the mark is kept
    assert TwinChanged("keeper") in net.orders
    twin = net.router.twins["keeper"]
    assert twin.mark == request.after_seq + 2
    net.router.twin_stored("keeper", 1, net.now)  # stored when one was held
    net.pump()
    assert acks(keeper) == [rp.Ack2]
    net.router.twin_stored("keeper", 1, net.now)
    net.pump()
    assert acks(keeper) == [rp.Ack2]


def test_a_replay_follows_while_there_is_a_retroactive_subscription() -> None:
    net = cluster_net()
    keeper = login(net, "keeper")
    keeper.subscribe("t", msg_from=math.inf)
    (request,) = orders(net, NeedReplay)
    assert keeper.admin("t", {"cmd": "unsubscribe"}).status == 0
    net.router.replay_batch(request, [], net.now)  # the archive's answer: nothing to read
    net.pump()
    assert orders(net, NeedReplay) == []  # stopped following
    keeper.subscribe("u", msg_from=math.inf)
    (again,) = orders(net, NeedReplay)  # follows again
    assert again.token != request.token
