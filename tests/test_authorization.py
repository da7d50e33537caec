"""Admins and private topics through the sans-IO Router (spec 6.2, 7.1, 7.10)."""

from __future__ import annotations

import math
from typing import Any

import pytest

import rembus_proto as rp
from rembus_proto import Status
from rembus_proto.security_port import MemorySecurity, SecurityError
from router_harness import Peer
from security_helpers import SecureNet

CONFIG = "__config__"


def make_net(**kwargs: Any) -> SecureNet:
    security = MemorySecurity(tenants={".": "1234"}, admins=["boss", "lazy"])
    net = SecureNet(security=security, **kwargs)
    for index, name in enumerate(["boss", "alice", "bob", "carol"]):
        net.register(name, "rsa" if index % 2 else "ecdsa", index)
    return net


def login(net: SecureNet, name: str) -> Peer:
    index = ["boss", "alice", "bob", "carol"].index(name)
    return net.login(name, "rsa" if index % 2 else "ecdsa", index)


def ok(reply: rp.Response) -> None:
    assert (reply.status, reply.data.value) == (0, None), reply


def unauthorized(reply: rp.Response) -> None:
    assert (reply.status, reply.data.value) == (Status.GENERIC_ERROR, "unauthorized"), reply


def private(net: SecureNet, boss: Peer, topic: str, *names: str) -> None:
    ok(boss.admin(topic, {"cmd": "private_topic"}))
    for name in names:
        ok(boss.admin(topic, {"cmd": "authorize", "cid": name}))


# -- admins ----------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["private_topic", "public_topic", "authorize", "unauthorize",
                                 "private_topics_config", "topics_config"])
def test_only_admins_run_the_security_commands(cmd: str) -> None:
    net = make_net()
    command = {"cmd": cmd, "cid": "alice"}
    unauthorized(login(net, "alice").admin("t", command))  # registered, not an admin
    unauthorized(net.connect().admin("t", command))  # anonymous
    unauthorized(net.named("lazy").admin("t", command))  # listed, but no key: anyone could
    assert net.router.guard.private == {} and net.security.private_topics() == {}
    assert login(net, "boss").admin("t", command).status == 0


def test_private_topics_config_lists_topics_and_names() -> None:
    net = make_net()
    boss = login(net, "boss")
    private(net, boss, "secret", "bob", "alice")
    ok(boss.admin("open", {"cmd": "private_topic"}))
    reply = boss.admin(CONFIG, {"cmd": "private_topics_config"})
    assert reply.data.value == {"secret": ["alice", "bob"], "open": []}


@pytest.mark.parametrize("cmd", ["broker_config", "load_config", "save_config", "shutdown"])
def test_only_admins_run_the_broker_commands(cmd: str) -> None:
    net = make_net()
    unauthorized(login(net, "alice").admin(CONFIG, {"cmd": cmd}))
    unauthorized(net.connect().admin(CONFIG, {"cmd": cmd}))
    unauthorized(net.named("lazy").admin(CONFIG, {"cmd": cmd}))
    assert not net.shutdown_requested
    assert login(net, "boss").admin(CONFIG, {"cmd": cmd}).status == 0
    assert net.shutdown_requested == (cmd == "shutdown")


def test_broker_config_lists_exposers_and_subscribers() -> None:
    net = make_net()
    alice, bob = login(net, "alice"), login(net, "bob")
    alice.expose("add")
    bob.expose("add")
    alice.subscribe("sensor")
    bob.subscribe("sensors/*")
    reply = login(net, "boss").admin(CONFIG, {"cmd": "broker_config"})
    assert reply.data.value == {"exposers": {"add": ["alice", "bob"]},
                                "subscribers": {"sensor": ["alice"], "sensors/*": ["bob"]}}


def test_load_config_reads_the_private_topics_again() -> None:
    net = make_net()
    boss = login(net, "boss")
    carol = login(net, "carol")
    net.security.save_private_topic("secret", ["alice"])  # changed behind the router's back
    ok(carol.admin("secret", {"cmd": "subscribe"}))
    ok(boss.admin(CONFIG, {"cmd": "load_config"}))
    assert net.router.guard.private == {"secret": {"alice"}}
    unauthorized(carol.admin("secret", {"cmd": "subscribe"}))


def test_admin_command_arguments_are_checked() -> None:
    net = make_net()
    boss = login(net, "boss")
    reply = boss.admin("t", {"cmd": "authorize"})
    assert (reply.status, reply.data.value) == (Status.GENERIC_ERROR, "authorize needs a cid")
    reply = boss.admin("t", {"cmd": "authorize", "cid": 7})
    assert reply.status == Status.GENERIC_ERROR
    reply = boss.admin(CONFIG, {"cmd": "private_topic"})
    assert (reply.status, reply.data.value) == (Status.GENERIC_ERROR,
                                                "private_topic needs a topic")
    ok(boss.admin("public", {"cmd": "unauthorize", "cid": "x"}))  # nothing to revoke
    assert net.router.guard.private == {}


def test_a_failed_save_changes_nothing() -> None:
    net = make_net()
    boss = login(net, "boss")

    def refuse(topic: str, names: Any) -> None:
        raise SecurityError("disk full")

    net.security.save_private_topic = refuse  # type: ignore[method-assign]
    reply = boss.admin("t", {"cmd": "private_topic"})
    assert (reply.status, reply.data.value) == (Status.GENERIC_ERROR, "disk full")
    assert net.router.guard.private == {}


# -- private topics ------------------------------------------------------------------

def test_unauthorized_publisher_is_dropped_silently() -> None:
    net = make_net()
    boss, alice, bob = login(net, "boss"), login(net, "alice"), login(net, "bob")
    private(net, boss, "secret", "alice", "bob")
    alice.subscribe("secret")
    carol = login(net, "carol")
    carol.publish("secret", "from carol")
    msg_id = carol.publish("secret", "qos", qos=1)
    anon = net.connect()
    anon.publish("secret", "from anonymous")
    assert alice.pubs() == [] and carol.take() == []  # no delivery, no ACK, no error
    assert msg_id is not None
    bob.publish("secret", "from bob")
    assert alice.pubs() == [("secret", ("from bob",))]


@pytest.mark.parametrize("cmd", ["subscribe", "unsubscribe", "expose", "unexpose",
                                 "add_interest", "add_impl"])
def test_unauthorized_topic_commands_are_refused(cmd: str) -> None:
    net = make_net()
    boss = login(net, "boss")
    private(net, boss, "secret", "alice")
    for peer in (login(net, "carol"), net.connect(), net.named("alice.free")):
        unauthorized(peer.admin("secret", {"cmd": cmd}))
        assert not peer.conn.twin.subs and not peer.conn.twin.exposed
    ok(login(net, "alice").admin("secret", {"cmd": cmd}))


def test_free_mode_name_listed_on_a_topic_is_not_enough() -> None:
    net = make_net()
    boss = login(net, "boss")
    private(net, boss, "secret", "dave")  # dave has no key: anyone may claim the name
    dave = net.named("dave")
    unauthorized(dave.admin("secret", {"cmd": "subscribe"}))
    unauthorized(dave.request(lambda i: rp.Rpc(i, "secret", rp.NO_ARGS)))


def test_unauthorized_rpc_is_refused() -> None:
    net = make_net()
    boss, alice = login(net, "boss"), login(net, "alice")
    private(net, boss, "secret", "alice", "bob")
    alice.expose("secret")
    carol = login(net, "carol")
    unauthorized(carol.request(lambda i: rp.Rpc(i, "secret", rp.NO_ARGS)))
    unauthorized(carol.request(lambda i: rp.Rpc(i, "secret", rp.NO_ARGS, "alice")))  # direct
    unauthorized(net.connect().request(lambda i: rp.Rpc(i, "secret", rp.NO_ARGS)))
    assert alice.take() == []  # the exposer never saw a call
    bob = login(net, "bob")
    call_id = bob.rpc("secret")
    [call] = alice.take()
    assert isinstance(call, rp.Rpc)
    alice.send(rp.Response(call.id, 0, rp.Payload.of("ok")))
    assert bob.response(call_id).data.value == "ok"


def test_subscribers_and_exposers_from_before_are_filtered() -> None:
    net = make_net()
    boss, alice, carol = login(net, "boss"), login(net, "alice"), login(net, "carol")
    carol.subscribe("secret")
    carol.admin("se*", {"cmd": "subscribe", "msg_from": 0.0})
    carol.expose("secret")
    alice.subscribe("**")
    private(net, boss, "secret", "alice", "bob")
    bob = login(net, "bob")
    bob.publish("secret", 1)
    assert carol.pubs() == []  # subscribed before the topic became private
    assert alice.pubs() == [("**", ("secret", 1))]  # authorized, through a pattern
    call_id = bob.rpc("secret")
    reply = bob.response(call_id)
    assert (reply.status, reply.data.value) == (Status.METHOD_UNAVAILABLE,
                                                "secret: method unavailable")
    assert carol.take() == []


def test_unauthorize_and_public_topic() -> None:
    net = make_net()
    boss, alice, bob = login(net, "boss"), login(net, "alice"), login(net, "bob")
    private(net, boss, "t", "alice", "bob")
    alice.subscribe("t")
    ok(boss.admin("t", {"cmd": "unauthorize", "cid": "bob"}))
    bob.publish("t", 1)
    assert alice.pubs() == []
    ok(boss.admin("t", {"cmd": "public_topic"}))
    assert net.security.private_topics() == {}
    bob.publish("t", 2)
    assert alice.pubs() == [("t", (2,))]


def test_setup_skips_private_topics_the_sender_may_not_use() -> None:
    net = make_net()
    boss = login(net, "boss")
    private(net, boss, "secret", "alice")
    carol = login(net, "carol")
    ok(carol.admin(CONFIG, {"cmd": "setup", "exposers": ["secret", "pub"],
                            "subscribers": ["secret", "news"]}))
    assert list(carol.conn.twin.exposed) == ["pub"] and set(carol.conn.twin.subs) == {"news"}


def test_private_topics_survive_a_restart() -> None:
    net = make_net()
    boss = login(net, "boss")
    private(net, boss, "secret", "alice")
    assert net.security.private_topics() == {"secret": {"alice"}}
    net.restart()
    assert net.router.guard.private == {"secret": {"alice"}}
    unauthorized(login(net, "carol").admin("secret", {"cmd": "subscribe"}))
    ok(login(net, "alice").admin("secret", {"cmd": "subscribe"}))


def test_stored_messages_of_a_private_topic_are_not_replayed_to_the_unauthorized() -> None:
    net = make_net()
    boss, bob = login(net, "boss"), login(net, "bob")
    carol = login(net, "carol")
    carol.subscribe("secret", msg_from=math.inf)
    alice = login(net, "alice")
    alice.subscribe("secret", msg_from=math.inf)
    private(net, boss, "secret", "alice", "bob")
    carol.close()
    alice.close()
    bob.publish("secret", "while away")
    carol = login(net, "carol")
    carol.reactive(True)
    assert carol.pubs() == []
    alice = login(net, "alice")
    alice.reactive(True)
    assert alice.pubs() == [("secret", ("while away",))]


def test_public_topics_are_untouched_by_the_checks() -> None:
    net = make_net()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("t")
    pub.publish("t", 1)
    assert sub.pubs() == [("t", (1,))]
    assert net.router.guard.private == {}
