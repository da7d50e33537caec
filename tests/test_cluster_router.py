"""The router's cluster actions on the sans-IO core: interests, forwarding, calls, leases."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import rembus_proto as rp
from rembus_proto import Status
from rembus_proto.broker.actions import (
    Forward,
    InterestChanged,
    LeaseReleased,
    NeedLease,
    RemoteCall,
)
from router_harness import Net, Peer


def joined() -> Net:
    net = Net()
    net.router.join_cluster()
    return net


def orders(net: Net, kind: type[Any]) -> list[Any]:
    """The orders of type ``kind`` given so far, removed from ``net.orders``."""
    found = [order for order in net.orders if isinstance(order, kind)]
    net.orders = [order for order in net.orders if not isinstance(order, kind)]
    return found


def grant(net: Net, peer: Peer, name: str, refusal: str | None = None) -> rp.Response:
    """Identify ``peer`` as ``name``, answering the lease request with ``refusal``."""
    msg_id = peer.new_id()
    peer.send(rp.Identity(msg_id, name))
    assert peer.inbox == []  # held until the lease is known
    assert orders(net, NeedLease) == [NeedLease(peer.conn, name)]
    net.router.lease_found(peer.conn, name, refusal, net.now)
    net.pump()
    return peer.response(msg_id)


def test_a_router_alone_gives_no_cluster_order() -> None:
    net = Net()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("t")
    pub.publish("t", 1)
    assert pub.request(lambda i: rp.Rpc(i, "nobody", rp.Payload.of([]))).status == \
        Status.METHOD_NOT_FOUND
    assert not [o for o in net.orders
                if isinstance(o, Forward | InterestChanged | RemoteCall | NeedLease)]


def test_interest_per_tenant_and_topic_counted_over_subscribers() -> None:
    net = joined()
    a, b = net.connect(), net.connect()
    a.subscribe("room/*/temp")
    b.subscribe("room/*/temp")
    a.subscribe("news")
    assert orders(net, InterestChanged) == [InterestChanged("sub", ".", "room/*/temp", True),
                                            InterestChanged("sub", ".", "news", True)]
    assert a.admin("room/*/temp", {"cmd": "unsubscribe"}).status == 0
    assert orders(net, InterestChanged) == []  # b still wants it
    b.close()
    assert orders(net, InterestChanged) == [InterestChanged("sub", ".", "room/*/temp", False)]


def test_local_publications_are_forwarded_and_remote_ones_never() -> None:
    net = joined()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("room/**")
    pub.publish("room/kitchen", 21)
    assert [(f.tenant, f.topic, rp.Payload(f.payload).value)
            for f in orders(net, Forward)] == [(".", "room/kitchen", [21])]
    sub.take()
    net.router.remote_publish(".", "room/hall", rp.Payload.of([7]).raw, net.now)
    net.pump()
    assert sub.pubs() == [("room/**", ("room/hall", 7))]
    assert orders(net, Forward) == []  # no echo


def test_remote_publication_stays_in_its_tenant() -> None:
    net = joined()
    sub = net.connect()
    sub.subscribe("t")
    net.router.remote_publish("other", "t", rp.Payload.of([1]).raw, net.now)
    net.router.remote_publish(".", "t", rp.Payload.of([2]).raw, net.now)
    net.pump()
    assert sub.pubs() == [("t", (2,))]


def test_a_call_nobody_serves_here_goes_to_the_cluster() -> None:
    net = joined()
    caller = net.connect()
    msg_id = caller.rpc("far", 1)
    (call,) = orders(net, RemoteCall)
    assert (call.conn, call.msg_id, call.topic, call.target) == (caller.conn, msg_id, "far",
                                                                 None)
    assert (call.missing, call.missing_value) == (Status.METHOD_NOT_FOUND, "far: method unknown")
    assert caller.inbox == []
    net.router.remote_reply(caller.conn, msg_id, 0, rp.Payload.of(42).raw, net.now)
    net.pump()
    answer = caller.response(msg_id)
    assert (answer.status, answer.data.value) == (0, 42)


def test_direct_to_a_component_not_here_goes_to_the_cluster() -> None:
    net = joined()
    caller = net.connect()
    caller.rpc("m", target="elsewhere")
    (call,) = orders(net, RemoteCall)
    assert (call.target, call.missing) == ("elsewhere", Status.TARGET_NOT_FOUND)


def test_requests_from_the_cluster_are_served_here_or_answered_never_sent_back() -> None:
    net = joined()
    exposer = net.connect()
    exposer.expose("double")
    router = net.router
    remote = router.remote_request(".", "double", None, rp.Payload.of([3]).raw, b"token001",
                                   net.now)
    net.peers[remote] = Peer(net, remote)
    net.pump()
    (forwarded,) = exposer.messages()
    assert isinstance(forwarded, rp.Rpc) and forwarded.data.value == [3]
    exposer.inbox.clear()
    exposer.send(rp.Response(forwarded.id, 0, rp.Payload.of(6)))
    answer = net.peers[remote].response(b"token001")
    assert (answer.status, answer.data.value) == (0, 6)
    router.remote_request(".", "missing", None, rp.Payload.of([]).raw, b"token002", net.now)
    net.pump()
    assert net.peers[remote].response(b"token002").status == Status.METHOD_NOT_FOUND
    router.remote_request(".", "m", "nobody", rp.Payload.of([]).raw, b"token003", net.now)
    net.pump()
    assert net.peers[remote].response(b"token003").status == Status.TARGET_NOT_FOUND
    assert orders(net, RemoteCall) == []  # never back to the cluster: no loops


def test_method_and_name_interests_follow_connected_components() -> None:
    net = joined()
    peer = net.connect()
    assert grant(net, peer, "svc").status == 0
    peer.expose("m")
    assert orders(net, InterestChanged) == [InterestChanged("direct", ".", "svc", True),
                                            InterestChanged("rpc", ".", "m", True)]
    peer.close()
    assert orders(net, InterestChanged) == [InterestChanged("rpc", ".", "m", False),
                                            InterestChanged("direct", ".", "svc", False)]
    assert orders(net, LeaseReleased) == [LeaseReleased("svc")]
    again = net.connect()
    assert grant(net, again, "svc").status == 0  # the twin's exposures come back with it
    assert orders(net, InterestChanged) == [InterestChanged("rpc", ".", "m", True),
                                            InterestChanged("direct", ".", "svc", True)]


def test_an_anonymous_exposer_is_reachable_from_the_cluster_while_connected() -> None:
    net = joined()
    peer = net.connect()
    peer.expose("m")
    assert orders(net, InterestChanged) == [InterestChanged("rpc", ".", "m", True)]
    peer.close()
    assert orders(net, InterestChanged) == [InterestChanged("rpc", ".", "m", False)]


def test_a_name_leased_elsewhere_is_refused() -> None:
    net = joined()
    peer = net.connect()
    refused = grant(net, peer, "taken", "already connected")
    assert (refused.status, refused.data.value) == (Status.GENERIC_ERROR, "already connected")
    peer.close()
    assert orders(net, LeaseReleased) == []


def test_a_lost_lease_closes_its_connection() -> None:
    net = joined()
    peer = net.connect()
    assert grant(net, peer, "svc").status == 0
    net.router.lease_lost("svc", 1013, "lost")
    net.pump()
    assert [(c.conn, c.code) for c in net.closes] == [(peer.conn, 1013)]
    assert orders(net, LeaseReleased) == []  # not ours any more: nothing to give back


def test_a_lease_won_for_a_connection_gone_meanwhile_is_given_back() -> None:
    net = joined()
    peer = net.connect()
    peer.send(rp.Identity(peer.new_id(), "svc"))
    assert orders(net, NeedLease) == [NeedLease(peer.conn, "svc")]
    peer.close()
    net.router.lease_found(peer.conn, "svc", None, net.now)
    net.pump()
    assert orders(net, LeaseReleased) == [LeaseReleased("svc")]


TOPICS = ["a", "a/b", "a/*", "**", "x/**"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(TOPICS), st.booleans()),
                max_size=30))
def test_interests_are_exactly_the_subscribed_topics(ops: list[tuple[int, str, bool]]) -> None:
    net = joined()
    peers = [net.connect() for _ in range(3)]
    wanted: set[str] = set()
    for index, topic, subscribe in ops:
        peer = peers[index]
        if subscribe:
            peer.subscribe(topic, reactive=False)
        else:
            assert peer.admin(topic, {"cmd": "unsubscribe"}).status == 0
        for change in orders(net, InterestChanged):
            assert change.present != (change.topic in wanted)  # only real changes
            (wanted.add if change.present else wanted.discard)(change.topic)
    expected = {topic for topic in TOPICS
                if any(topic in peer.conn.twin.subs for peer in peers)}
    assert wanted == expected
