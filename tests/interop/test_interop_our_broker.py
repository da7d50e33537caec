"""Our broker serving unmodified upstream clients of both generations, and ours, on one port.

``0.1.0`` peers use 16-byte ids, ``add_interest``/``add_impl`` and only
understand 3-element QoS0 PUBs; ``0.8.23`` peers use 8-byte ids and the
current admin commands. Negative checks ("nothing arrives") publish a marker
after the message that must not arrive: the broker keeps the order of one
publisher's messages to one subscriber, so once the marker is there the
other message would have been too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from harness import CliBroker, OurBroker, OurClient, Peer, exchange_with_peer

from rembus_proto.broker import Router

pytestmark = pytest.mark.interop

VERSIONS = ["0.1.0", "0.8.23"]
Spawn = Callable[[str, str], Peer]


def connect(spawn: Spawn, broker: OurBroker | CliBroker,
            *specs: tuple[str, str | None]) -> list[Peer]:
    """Peers connected to ``broker``, one per ``(version, name)`` (name None: anonymous).

    All processes are started before the first connects: they boot in parallel.
    """
    peers = [spawn(version, name or f"anon{i}-{version}")
             for i, (version, name) in enumerate(specs)]
    for peer, (_, name) in zip(peers, specs, strict=True):
        peer.call("connect", url=f"{broker.url}/{name}" if name else broker.url)
    return peers


@pytest.mark.parametrize("version", VERSIONS)
def test_pubsub_and_unsubscribe(broker: OurBroker, spawn: Spawn, version: str) -> None:
    sub, pub = connect(spawn, broker, (version, "sub"), (version, None))
    for topic in ("temperature", "marker"):
        sub.call("subscribe", topic=topic)
    sub.call("reactive")

    pub.call("publish", topic="temperature", args=[21.5, "kitchen"])
    pub.call("publish", topic="temperature", args=[{"k": [1, None]}])
    pub.call("publish", topic="temperature", args=[])
    assert sub.pub("temperature") == [21.5, "kitchen"]
    assert sub.pub("temperature") == [{"k": [1, None]}]
    assert sub.pub("temperature") == []

    sub.call("unsubscribe", topic="temperature")
    pub.call("publish", topic="temperature", args=["after unsubscribe"])
    pub.call("publish", topic="marker", args=[1])
    assert sub.pub("marker") == [1]
    assert sub.pending_pubs("temperature") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_rpc_direct_errors_and_unexpose(broker: OurBroker, spawn: Spawn, version: str) -> None:
    server, client = connect(spawn, broker, (version, "calc"), (version, None))
    server.call("expose", topic="add", kind="add")
    server.call("expose", topic="echo", kind="echo")
    server.call("expose", topic="fail", kind="fail")

    assert client.call("rpc", topic="add", args=[1, 2]) == 3
    assert server.served("add") == [1, 2]
    assert client.call("rpc", topic="echo", args=["x"]) == "x"
    assert client.call("rpc", topic="echo", args=[[1, "a"], {"b": 2.5}]) == [[1, "a"], {"b": 2.5}]
    assert client.call("direct", target="calc", topic="add", args=[2, 3]) == 5
    assert client.fails("rpc", topic="fail", args=[]) == (40, "kaboom")
    assert client.fails("rpc", topic="nosuch", args=[])[0] == 42
    assert client.fails("direct", target="nobody", topic="add", args=[1, 2]) == (
        45, "nobody")

    server.call("unexpose", topic="add")
    assert client.fails("rpc", topic="add", args=[1, 2])[0] == 42
    assert client.call("rpc", topic="echo", args=[7]) == 7


@pytest.mark.parametrize("version", VERSIONS)
def test_retroactive_delivery(broker: OurBroker, spawn: Spawn, version: str) -> None:
    retro, live, pub = connect(spawn, broker, (version, "retro"), (version, "live"),
                               (version, None))
    retro.call("subscribe", topic="orders", retroactive=True)
    live.call("subscribe", topic="orders", retroactive=False)
    for peer in (retro, live):
        peer.call("reactive")
        peer.call("close")

    pub.call("publish", topic="orders", args=[1])
    pub.call("publish", topic="orders", args=[2, "two"])

    for peer, name in ((retro, "retro"), (live, "live")):
        peer.call("connect", url=f"{broker.url}/{name}")
        peer.call("subscribe", topic="orders", retroactive=name == "retro")
        peer.call("reactive")
    assert retro.pub("orders") == [1]
    assert retro.pub("orders") == [2, "two"]

    pub.call("publish", topic="orders", args=[3])
    assert retro.pub("orders") == [3]
    assert live.pub("orders") == [3]  # what was published while it was away is not replayed


def test_0823_components_speaking_json(broker: OurBroker, spawn: Spawn) -> None:
    js, cb = spawn("0.8.23", "json_peer"), spawn("0.8.23", "cbor_peer")
    js.call("connect", url=f"{broker.url}/json_peer", json=True)
    cb.call("connect", url=f"{broker.url}/cbor_peer")
    for peer in (js, cb):
        peer.call("subscribe", topic="t")
        peer.call("reactive")
    js.call("expose", topic="add", kind="add")
    cb.call("expose", topic="echo", kind="echo")

    cb.call("publish", topic="t", args=[1.5, "x", {"k": [1, None]}])
    assert js.pub("t") == [1.5, "x", {"k": [1, None]}]
    js.call("publish", topic="t", args=[2, "y"])
    assert cb.pub("t") == [2, "y"]
    assert cb.call("rpc", topic="add", args=[1, 2]) == 3
    assert js.call("rpc", topic="echo", args=[[1, "a"]]) == [1, "a"]
    assert js.fails("rpc", topic="nosuch", args=[])[0] == 42


def test_010_publisher_to_0823_subscriber(broker: OurBroker, spawn: Spawn) -> None:
    sub, pub = connect(spawn, broker, ("0.8.23", "sub0823"), ("0.1.0", "pub010"))
    sub.call("subscribe", topic="news")
    sub.call("reactive")
    pub.call("publish", topic="news", args=["hello", 1])
    pub.call("publish", topic="news", args=[[1, 2], {"x": None}])
    assert sub.pub("news") == ["hello", 1]
    assert sub.pub("news") == [[1, 2], {"x": None}]


def test_0823_publisher_to_010_subscriber_every_qos(broker: OurBroker, spawn: Spawn) -> None:
    sub, pub = connect(spawn, broker, ("0.1.0", "sub010"), ("0.8.23", "pub0823"))
    sub.call("subscribe", topic="news")
    sub.call("reactive")
    for qos in (0, 1, 2):
        pub.call("publish", topic="news", args=[f"qos{qos}", qos], qos=qos)
    # 0.1.0 only understands [1, topic, data]: the broker downgrades QoS PUBs for it
    assert [sub.pub("news") for _ in range(3)] == [["qos0", 0], ["qos1", 1], ["qos2", 2]]


def test_0823_caller_to_010_exposer(broker: OurBroker, spawn: Spawn) -> None:
    server, client = connect(spawn, broker, ("0.1.0", "calc010"), ("0.8.23", "caller0823"))
    server.call("expose", topic="add", kind="add")
    server.call("expose", topic="fail", kind="fail")
    assert client.call("rpc", topic="add", args=[20, 22]) == 42
    assert client.call("direct", target="calc010", topic="add", args=[1, 1]) == 2
    assert client.fails("rpc", topic="fail", args=[]) == (40, "kaboom")
    server.call("unexpose", topic="add")
    assert client.fails("rpc", topic="add", args=[1, 2])[0] == 42


def test_010_caller_to_0823_exposer(broker: OurBroker, spawn: Spawn) -> None:
    server, client = connect(spawn, broker, ("0.8.23", "calc0823"), ("0.1.0", "caller010"))
    server.call("expose", topic="add", kind="add")
    assert client.call("rpc", topic="add", args=[20, 22]) == 42
    assert client.call("direct", target="calc0823", topic="add", args=[1, 1]) == 2
    server.call("unexpose", topic="add")
    assert client.fails("rpc", topic="add", args=[1, 2])[0] == 42


def test_retroactive_delivery_across_generations(broker: OurBroker, spawn: Spawn) -> None:
    old, new, old_pub, new_pub = connect(spawn, broker, ("0.1.0", "old"), ("0.8.23", "new"),
                                         ("0.1.0", None), ("0.8.23", None))
    for peer in (old, new):
        peer.call("subscribe", topic="orders", retroactive=True)
        peer.call("reactive")
        peer.call("close")
    new_pub.call("publish", topic="orders", args=["qos1 from 0.8.23"], qos=1)
    new_pub.call("publish", topic="orders", args=["qos2 from 0.8.23"], qos=2)
    old_pub.call("publish", topic="orders", args=["from 0.1.0"])

    for peer, name in ((old, "old"), (new, "new")):
        peer.call("connect", url=f"{broker.url}/{name}")
        peer.call("subscribe", topic="orders", retroactive=True)
        peer.call("reactive")
    expected = [["qos1 from 0.8.23"], ["qos2 from 0.8.23"], ["from 0.1.0"]]
    assert [old.pub("orders") for _ in range(3)] == expected
    assert [new.pub("orders") for _ in range(3)] == expected


def test_messages_too_large_for_010_are_kept_from_it(broker: OurBroker, spawn: Spawn) -> None:
    """0.1.0 closes its connection on a message over 1 MiB; the broker must not send one."""
    old, new = connect(spawn, broker, ("0.1.0", "old"), ("0.8.23", "new"))
    for peer in (old, new):
        for topic in ("big", "marker"):
            peer.call("subscribe", topic=topic)
        peer.call("reactive")
    old.call("expose", topic="echo", kind="echo")
    big = "x" * (1536 * 1024)

    new.call("publish", topic="big", args=[big])
    new.call("publish", topic="marker", args=[1])
    assert old.pub("marker") == [1]
    assert old.pending_pubs("big") == []
    old.call("publish", topic="marker", args=[2])
    assert new.pub("marker") == [2]

    status, message = new.fails("rpc", topic="echo", args=[big])
    assert status == 10 and "too large" in str(message)
    assert new.call("rpc", topic="echo", args=["small"]) == "small"
    new.call("expose", topic="big_reply", kind="echo")
    status, message = old.fails("rpc", topic="big_reply", args=[big[:-1024]])
    assert status == 10 and "too large" in str(message)
    assert old.call("rpc", topic="big_reply", args=["small"]) == "small"


@pytest.mark.parametrize("version", VERSIONS)
def test_our_client_with_upstream_peer(broker: OurBroker, spawn: Spawn,
                                       ours: Callable[[str], OurClient], version: str) -> None:
    [peer] = connect(spawn, broker, (version, "peer"))
    mine = ours(f"{broker.url}/mine")
    levels = (0,) if version == "0.1.0" else (0, 1, 2)  # 0.1.0 publishes with QoS0 only
    received = exchange_with_peer(peer, mine, "peer", "mine", qos_to_peer=1, peer_qos=levels)
    assert received == [[qos] for qos in levels]


def test_nested_dataframes_with_0823(broker: OurBroker, spawn: Spawn,
                                     ours: Callable[[str], OurClient]) -> None:
    pa = pytest.importorskip("pyarrow")
    [peer] = connect(spawn, broker, ("0.8.23", "df_peer"))
    mine = ours(f"{broker.url}/df_mine")
    peer.call("expose", topic="their_frames", kind="frames")
    table, text = mine.rpc("their_frames")
    assert isinstance(table, pa.Table) and table.to_pydict() == {"a": [1, 2]}
    assert text == "text"
    mine.expose(lambda: [pa.table({"b": [3, 4]}), "ours"], topic="our_frames")
    assert peer.call("rpc", topic="our_frames", args=[]) == [{"DataFrame": {"b": [3, 4]}}, "ours"]


def test_both_generations_and_ours_on_one_broker(
        broker: OurBroker, spawn: Spawn, ours: Callable[[str], OurClient]) -> None:
    old, new = connect(spawn, broker, ("0.1.0", "old"), ("0.8.23", "new"))
    mine = ours(f"{broker.url}/mine")
    for peer in (old, new):
        peer.call("subscribe", topic="all")
        peer.call("reactive")
    mine.subscribe_topic("all")

    old.call("publish", topic="all", args=["from 0.1.0"])
    new.call("publish", topic="all", args=["from 0.8.23"], qos=1)
    mine.publish("all", "from ours", qos=2)
    # three publishers on three connections: the order between them is not defined
    assert sorted([old.pub("all"), old.pub("all")]) == [["from 0.8.23"], ["from ours"]]
    assert sorted([new.pub("all"), new.pub("all")]) == [["from 0.1.0"], ["from ours"]]
    assert sorted([mine.pub("all"), mine.pub("all")]) == [["from 0.1.0"], ["from 0.8.23"]]


def test_0823_and_ours_come_back_after_a_broker_restart(
        broker: OurBroker, spawn: Spawn, ours: Callable[[str], OurClient]) -> None:
    """0.8.23 reconnects on its own and restores its state with the ``setup`` command."""
    new, caller = connect(spawn, broker, ("0.8.23", "new"), ("0.1.0", "caller"))
    new.call("subscribe", topic="news")
    new.call("reactive")
    new.call("expose", topic="add", kind="add")
    mine = ours(f"{broker.url}/mine")
    mine.subscribe_topic("news")

    broker.restart()

    def back(router: Router) -> bool:
        twins = router.twins
        return all(name in twins and twins[name].conn is not None and twins[name].reactive
                   for name in ("new", "mine"))

    broker.wait_until(back, "0.8.23 and our client reconnected and reactive")
    caller.call("connect", url=broker.url)  # 0.1.0 does not reconnect by itself
    caller.call("publish", topic="news", args=["after restart"])
    assert new.pub("news") == ["after restart"]
    assert mine.pub("news") == ["after restart"]
    assert caller.call("rpc", topic="add", args=[1, 2]) == 3


def test_retroactive_subscriptions_survive_a_rembus_broker_restart(
        cli_broker: CliBroker, spawn: Spawn) -> None:
    """``rembus broker`` keeps upstream peers' twins and their messages in its data dir."""
    old, new, pub = connect(spawn, cli_broker, ("0.1.0", "old"), ("0.8.23", "new"),
                            ("0.8.23", None))
    for peer in (old, new):
        peer.call("subscribe", topic="orders", retroactive=True)
        peer.call("reactive")
        peer.call("close")
    pub.call("publish", topic="orders", args=["before restart"], qos=1)  # stored when acked
    pub.call("close")

    cli_broker.restart()
    pub.call("connect", url=cli_broker.url)
    pub.call("publish", topic="orders", args=["after restart"], qos=1)
    for peer, name in ((old, "old"), (new, "new")):
        peer.call("connect", url=f"{cli_broker.url}/{name}")
        peer.call("subscribe", topic="orders", retroactive=True)
        peer.call("reactive")
        assert [peer.pub("orders"), peer.pub("orders")] == [["before restart"],
                                                            ["after restart"]]
