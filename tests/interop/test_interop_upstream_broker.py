"""Our client against the upstream 0.8.23 broker (``brokerd``), alone and with 0.8.23 peers."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
from harness import OurClient, Peer, Received, UpstreamBroker, exchange_with_peer

import rembus

pytestmark = pytest.mark.interop

Ours = Callable[..., OurClient]
Spawn = Callable[[str, str], Peer]


def test_our_clients_pubsub_every_qos_and_unsubscribe(upstream_broker: UpstreamBroker,
                                                      ours: Ours) -> None:
    sub = ours(f"{upstream_broker.url}/sub")
    pub = ours(upstream_broker.url)
    sub.subscribe_topic("temperature")
    sub.subscribe_topic("marker")
    for qos in (0, 1, 2):
        pub.publish("temperature", qos, {"room": "kitchen"}, qos=qos)
    assert [sub.pub("temperature") for _ in range(3)] == [
        [q, {"room": "kitchen"}] for q in (0, 1, 2)]

    sub.unsubscribe("temperature")
    pub.publish("temperature", "after unsubscribe")
    pub.publish("marker", 1)
    assert sub.pub("marker") == [1]
    assert sub.pending_pubs("temperature") == []


def test_our_clients_rpc_direct_errors_and_unexpose(upstream_broker: UpstreamBroker,
                                                    ours: Ours) -> None:
    server = ours(f"{upstream_broker.url}/calc")
    client = ours(upstream_broker.url)
    server.expose_add("add")

    def fail() -> None:
        raise ValueError("kaboom")

    server.expose(fail)
    assert client.rpc("add", 1, 2) == 3
    assert client.direct("calc", "add", 3, 4) == 7
    assert client.rpc("version").startswith("python_")
    with pytest.raises(rembus.MethodException, match="kaboom"):
        client.rpc("fail")
    with pytest.raises(rembus.MethodNotFound):
        client.rpc("nosuch")
    with pytest.raises(rembus.TargetNotFound):
        client.direct("nobody", "add", 1, 2)

    server.unexpose("add")
    # upstream keeps the topic with no exposer left: "unavailable" (43), where ours says 42
    with pytest.raises(rembus.MethodUnavailable):
        client.rpc("add", 1, 2)


def test_our_client_retroactive_delivery(upstream_broker: UpstreamBroker, ours: Ours) -> None:
    sub = ours(f"{upstream_broker.url}/retro")
    sub.subscribe_topic("orders", retroactive=True)
    sub.close()
    pub = ours(upstream_broker.url)
    pub.publish("orders", 1)
    pub.publish("orders", 2, "two")
    # upstream replays only what its archiver already wrote to its tables
    upstream_broker.wait_archived(2)

    again = ours(f"{upstream_broker.url}/retro")
    again.subscribe_topic("orders", retroactive=True)
    assert again.pub("orders") == [1]
    assert again.pub("orders") == [2, "two"]


@pytest.mark.parametrize("client", ["ours", "ours-httpx", "0.8.23"])
def test_retroactive_subscriber_closed_at_once_gets_exactly_the_missed_messages(
        upstream_broker: UpstreamBroker, ours: Ours, spawn: Spawn, client: str) -> None:
    """A retroactive subscriber closes right after subscribing, while the broker replays.

    The broker replays the topic's history when the subscriber turns reactive
    and remembers, per component, the last message it sent. On its return the
    component must get what was published while it was away, nothing older
    and nothing twice (the 0.8.23 client is the reference).
    """
    pub = ours(upstream_broker.url)
    for n in range(5):
        pub.publish("orders", "history", n)
    upstream_broker.wait_archived(5)

    url = f"{upstream_broker.url}/retro"
    peer = spawn("0.8.23", "retro") if client == "0.8.23" else None
    transport = "httpx" if client == "ours-httpx" else "native"

    def session() -> Received:
        if peer is None:
            mine = ours(url, transport=transport)
            mine.subscribe_topic("orders", retroactive=True)
            return mine
        peer.call("connect", url=url)
        peer.call("subscribe", topic="orders", retroactive=True)
        peer.call("reactive")
        return peer

    first = session()
    if peer is None:
        cast(OurClient, first).close()
    else:
        peer.call("close")
        for _ in peer.pending_pubs("orders"):  # what the first session got, if anything
            peer.pub("orders")

    for n in range(3):
        pub.publish("orders", "missed", n)
    upstream_broker.wait_archived(8)

    again = session()
    # the broker replays before it handles a later publication: "end" comes last
    pub.publish("orders", "end")
    received = []
    while (args := again.pub("orders")) != ["end"]:
        received.append(args)
    assert received == [["missed", n] for n in range(3)]


def test_our_client_with_0823_peer(upstream_broker: UpstreamBroker, ours: Ours,
                                   spawn: Spawn) -> None:
    peer = spawn("0.8.23", "peer")
    peer.call("connect", url=f"{upstream_broker.url}/peer")
    mine = ours(f"{upstream_broker.url}/mine")
    received = exchange_with_peer(peer, mine, "peer", "mine", qos_to_peer=2)
    assert received == [[0], [1], [2]]


def test_our_client_comes_back_after_an_upstream_broker_restart(
        upstream_broker: UpstreamBroker, ours: Ours) -> None:
    """Our client reconnects by itself and restores its subscriptions and exposures."""
    server = ours(f"{upstream_broker.url}/calc")
    server.expose_add("add")
    sub = ours(f"{upstream_broker.url}/sub")
    sub.subscribe_topic("news")

    upstream_broker.restart()

    for mine in (server, sub):
        mine.reconnected()
        # answered after the broker took what it restored before, on the same connection
        assert mine.rpc("version").startswith("python_")
    client = ours(upstream_broker.url)
    assert client.rpc("add", 1, 2) == 3
    client.publish("news", "after restart")
    assert sub.pub("news") == ["after restart"]
