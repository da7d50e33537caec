"""Authentication through the sans-IO Router: challenge, attestation, register, unregister,
authenticated mode (spec 5.3-5.6). Signatures are real (RSA 2048 and P-256)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import rembus_proto as rp
from rembus_proto import CONNECTION_ID, Status
from rembus_proto.broker import CLOSE_OVERWRITTEN, CLOSE_UNAUTHENTICATED, RouterConfig
from rembus_proto.security_port import ECDSA, RSA, MemorySecurity, PublicKey
from rembus_proto.store import MemoryStore
from router_harness import Peer
from security_helpers import DER, PEM, PKCS1, SPKI, SecureNet, public_key, signature

AUTH = RouterConfig(authenticated=True, challenge_timeout=3.0)


def challenge_of(peer: Peer, name: str) -> bytes:
    reply = peer.identify(name)
    assert reply.status == Status.CHALLENGE
    value = reply.data.value
    assert isinstance(value, bytes) and len(value) == 4
    return value


def attest(peer: Peer, name: str, sig: bytes, msg_id: bytes | None = None) -> rp.Response:
    if msg_id is not None:
        peer.send(rp.Attestation(msg_id, name, sig))
        return peer.response(msg_id)
    return peer.request(lambda i: rp.Attestation(i, name, sig))


def stored_twins(net: SecureNet) -> set[str]:
    store = net.store
    assert isinstance(store, MemoryStore)
    return set(store.twins)


def responses(peer: Peer) -> list[rp.Response]:
    """Take the inbox, which must hold only RESPONSEs."""
    out = []
    for message in peer.take():
        assert isinstance(message, rp.Response), message
        out.append(message)
    return out


def closed(net: SecureNet, peer: Peer) -> list[tuple[int, str]]:
    return [(c.code, c.reason) for c in net.closes if c.conn is peer.conn]


def assert_refused(net: SecureNet, peer: Peer, reply: rp.Response, reason: str) -> None:
    assert (reply.status, reply.data.value) == (Status.GENERIC_ERROR, reason)
    assert closed(net, peer) == [(CLOSE_UNAUTHENTICATED, reason)]
    assert not peer.conn.twin.named


# -- challenge and attestation ---------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_registered_name_is_challenged_and_logs_in_with_its_key(kind: str) -> None:
    net = SecureNet()
    net.register("alice", kind)
    peer = net.connect()
    msg_id = peer.new_id()
    peer.send(rp.Identity(msg_id, "alice"))
    [frame] = peer.inbox
    assert frame[:2] == b"\x84\x04" and frame[2:11] == b"\x48" + msg_id
    assert frame[11:13] == b"\x0b\x44" and len(frame) == 17  # [4, id, 11, <4 bytes>]
    challenge = peer.response(msg_id).data.value
    assert not peer.conn.twin.named  # nothing bound before the attestation
    assert "alice" not in stored_twins(net)
    reply = attest(peer, "alice", signature(challenge, "alice", kind))
    assert (reply.status, reply.data.value) == (0, None)
    assert peer.conn.twin.name == "alice" and peer.conn in net.router.guard.authenticated
    assert "alice" in stored_twins(net)


@pytest.mark.parametrize(("kind", "encoding", "layout"), [
    ("rsa", PEM, PKCS1), ("rsa", DER, PKCS1), ("rsa", DER, SPKI), ("ecdsa", DER, SPKI)])
def test_every_public_key_layout_verifies(kind: str, encoding: Any, layout: Any) -> None:
    net = SecureNet()
    net.security.save_key("bob", public_key(kind, 0, encoding, layout))
    peer = net.connect()
    challenge = challenge_of(peer, "bob")
    assert attest(peer, "bob", signature(challenge, "bob", kind)).status == 0


def test_unregistered_name_logs_in_free_without_a_challenge() -> None:
    net = SecureNet()
    net.register("alice")
    reply = net.connect().identify("free")
    assert (reply.status, reply.data.value) == (0, None)


def test_wrong_signature_is_refused_and_closes() -> None:
    net = SecureNet()
    net.register("alice", "rsa", 0)
    peer = net.connect()
    challenge = challenge_of(peer, "alice")
    reply = attest(peer, "alice", signature(challenge, "alice", "rsa", 1))  # another key
    assert_refused(net, peer, reply, "signature verification failed")
    assert "alice" not in stored_twins(net) and "alice" not in net.router.twins


def test_garbage_signature_is_refused() -> None:
    net = SecureNet()
    net.register("alice", "ecdsa")
    peer = net.connect()
    challenge_of(peer, "alice")
    assert_refused(net, peer, attest(peer, "alice", b"\x00" * 64),
                   "signature verification failed")


def test_challenge_is_single_use() -> None:
    net = SecureNet()
    net.register("alice")
    peer = net.connect()
    challenge = challenge_of(peer, "alice")
    good = signature(challenge, "alice")
    assert attest(peer, "alice", good).status == 0
    again = attest(peer, "alice", good)
    assert (again.status, again.data.value) == (Status.GENERIC_ERROR, "already identified")
    assert closed(net, peer) == [(CLOSE_UNAUTHENTICATED, "already identified")]


def test_after_a_failed_attestation_the_connection_is_ignored() -> None:
    net = SecureNet()
    net.register("alice")
    peer = net.connect()
    challenge = challenge_of(peer, "alice")
    attest(peer, "alice", b"bad")
    peer.inbox.clear()
    peer.send(rp.Attestation(peer.new_id(), "alice", signature(challenge, "alice")))
    assert peer.inbox == [] and not peer.conn.twin.named


def test_replayed_attestation_fails_on_a_new_connection() -> None:
    net = SecureNet()
    net.register("alice")
    first = net.connect()
    challenge = challenge_of(first, "alice")
    captured = rp.Attestation(first.new_id(), "alice", signature(challenge, "alice"))
    first.send(captured)
    assert first.response(captured.id).status == 0
    first.close()
    thief = net.connect()
    challenge_of(thief, "alice")  # a fresh challenge: the captured signature does not fit
    thief.send(captured)
    assert_refused(net, thief, thief.response(captured.id), "signature verification failed")


def test_stale_challenge_is_refused() -> None:
    net = SecureNet(RouterConfig(challenge_timeout=3.0))
    net.register("alice")
    peer = net.connect()
    challenge = challenge_of(peer, "alice")
    net.now += 3.0  # no timer ran: the attestation itself finds the challenge too old
    assert_refused(net, peer, attest(peer, "alice", signature(challenge, "alice")),
                   "challenge expired")


def test_expired_challenge_is_forgotten_by_the_timer() -> None:
    net = SecureNet(RouterConfig(challenge_timeout=3.0))
    net.register("alice")
    peer = net.connect()
    challenge = challenge_of(peer, "alice")
    assert net.router.next_deadline() == net.now + 3.0
    net.advance(3.0)
    assert closed(net, peer) == []  # normal mode: it may stay, anonymous
    assert_refused(net, peer, attest(peer, "alice", signature(challenge, "alice")),
                   "no challenge to answer")


def test_attestation_for_another_name_than_the_challenged_one() -> None:
    net = SecureNet()
    net.register("alice", "rsa", 0)
    net.register("mallory", "rsa", 1)
    peer = net.connect()
    challenge = challenge_of(peer, "alice")
    reply = attest(peer, "mallory", signature(challenge, "mallory", "rsa", 1))
    assert_refused(net, peer, reply, "attestation for another name than the challenged one")


def test_attestation_without_a_challenge() -> None:
    net = SecureNet()
    net.register("alice")
    peer = net.connect()
    assert_refused(net, peer, attest(peer, "alice", b"sig"), "no challenge to answer")


def test_key_removed_between_challenge_and_attestation() -> None:
    net = SecureNet()
    net.register("alice")
    peer = net.connect()
    challenge = challenge_of(peer, "alice")
    net.security.delete_key("alice")
    assert_refused(net, peer, attest(peer, "alice", signature(challenge, "alice")),
                   "alice is not registered")


def _raising_verifier(key: PublicKey, signed: bytes, sig: bytes) -> bool:
    raise RuntimeError("boom")


@pytest.mark.parametrize("verify", [_raising_verifier, None], ids=["raises", "missing"])
def test_a_verifier_that_raises_or_is_missing_lets_nobody_in(
        verify: Callable[[PublicKey, bytes, bytes], bool] | None) -> None:
    net = SecureNet()
    net.register("alice")
    net.router.guard._verify = verify
    peer = net.connect()
    challenge = challenge_of(peer, "alice")
    assert_refused(net, peer, attest(peer, "alice", signature(challenge, "alice")),
                   "signature verification failed")


def test_name_cannot_be_taken_over_while_its_owner_is_connected() -> None:
    net = SecureNet()
    net.register("alice")
    owner = net.login("alice")
    reply = net.connect().identify("alice")
    assert (reply.status, reply.data.value) == (Status.GENERIC_ERROR, "already connected")
    assert net.router.twins["alice"].conn is owner.conn


def test_overwrite_needs_the_key_first() -> None:
    net = SecureNet(RouterConfig(overwrite_connection=True))
    net.register("alice")
    owner = net.login("alice")
    owner.subscribe("t")
    intruder = net.connect()
    challenge = challenge_of(intruder, "alice")
    assert net.closes == []  # the owner is not closed by a mere IDENTITY
    forged = signature(challenge, "alice", "rsa", 1)
    assert_refused(net, intruder, attest(intruder, "alice", forged),
                   "signature verification failed")
    assert net.router.twins["alice"].conn is owner.conn
    net.connect().publish("t", 1)
    assert owner.pubs() == [("t", (1,))]
    # the real owner, from elsewhere, does take over
    again = net.connect()
    challenge = challenge_of(again, "alice")
    assert attest(again, "alice", signature(challenge, "alice")).status == 0
    assert (owner.conn, CLOSE_OVERWRITTEN, "overwritten") in [
        (c.conn, c.code, c.reason) for c in net.closes]


def test_julia_clients_attest_with_the_connection_id() -> None:
    net = SecureNet()
    net.register("jl")
    peer = net.connect()
    challenge = challenge_of(peer, "ws://127.0.0.1:8338/jl")
    assert attest(peer, "jl", signature(challenge, "jl"), CONNECTION_ID).status == 0


# -- registration ----------------------------------------------------------------

def register(peer: Peer, name: str, pin: str, key: PublicKey | None = None,
             keytype: int | None = None) -> rp.Response:
    key = key or public_key()
    kt = key.keytype if keytype is None else keytype
    return peer.request(lambda i: rp.Register(i, name, pin, key.data, kt))


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_register_then_login(kind: str) -> None:
    net = SecureNet()
    peer = net.connect()
    reply = register(peer, "dev.acme", "4321", public_key(kind))
    assert (reply.status, reply.data.value) == (0, None)
    assert net.security.public_key("dev.acme") == public_key(kind)
    net.login("dev.acme", kind)


@pytest.mark.parametrize(("name", "pin", "reason"), [
    ("dev.other", "4321", "tenant [other] not enabled"),
    ("dev.acme", "1234", "wrong tenant/pin"),
    ("dev.acme", "", "wrong tenant/pin"),
    ("plain", "4321", "wrong tenant/pin"),
    ("a.b.c", "4321", "tenant [b.c] not enabled"),
])
def test_register_checks_the_tenant_pin(name: str, pin: str, reason: str) -> None:
    net = SecureNet()
    reply = register(net.connect(), name, pin)
    assert (reply.status, reply.data.value) == (Status.GENERIC_ERROR, reason)
    assert net.security.public_key(name) is None


def test_wrong_pins_lock_the_tenant_with_a_growing_lockout() -> None:
    net = SecureNet(RouterConfig(pin_attempts=3, pin_lockout=10.0))
    peer = net.connect()
    for _ in range(3):
        assert register(peer, "dev.acme", "0000").data.value == "wrong tenant/pin"
    locked = register(net.connect(), "dev.acme", "4321")  # the right PIN, from anywhere
    assert (locked.status, locked.data.value) == (
        Status.GENERIC_ERROR, "tenant [acme]: too many wrong PINs, try again in 10 s")
    assert register(peer, "plain", "1234").status == 0  # other tenants are not locked
    net.advance(10.0)
    assert register(peer, "dev.acme", "0000").data.value == "wrong tenant/pin"
    assert "try again in 20 s" in register(peer, "dev.acme", "4321").data.value
    net.advance(20.0)
    assert register(peer, "dev.acme", "4321").status == 0
    assert net.security.public_key("dev.acme") is not None


def test_a_right_pin_resets_the_count_of_wrong_ones() -> None:
    net = SecureNet(RouterConfig(pin_attempts=2))
    peer = net.connect()
    assert register(peer, "dev.acme", "0000").data.value == "wrong tenant/pin"
    assert register(peer, "dev.acme", "4321").status == 0
    assert register(peer, "dev.acme", "0000").data.value == "wrong tenant/pin"
    assert register(peer, "dev2.acme", "4321").status == 0


def test_the_lockout_is_at_most_an_hour() -> None:
    net = SecureNet(RouterConfig(pin_attempts=1, pin_lockout=1000.0))
    peer = net.connect()
    for _ in range(3):
        register(peer, "dev.acme", "0000")
        net.advance(4000.0)
    register(peer, "dev.acme", "0000")
    assert "try again in 3600 s" in register(peer, "dev.acme", "4321").data.value


def test_name_without_a_dot_belongs_to_the_dot_tenant() -> None:
    net = SecureNet()
    assert register(net.connect(), "plain", "1234").status == 0


def test_register_an_already_registered_name() -> None:
    net = SecureNet()
    net.register("alice", "rsa", 0)
    reply = register(net.connect(), "alice", "1234", public_key("rsa", 1))
    assert reply.status == Status.NAME_ALREADY_TAKEN and "already registered" in reply.data.value
    assert net.security.public_key("alice") == public_key("rsa", 0)


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "sp ace", "c:x", "x" * 201])
def test_register_refuses_names_unfit_for_files(name: str) -> None:
    net = SecureNet(security=MemorySecurity(tenants={".": "1", "hidden": "1", "b": "1"}))
    reply = register(net.connect(), name, "1")
    assert reply.status == Status.GENERIC_ERROR and reply.data.value == f"invalid name {name!r}"


def test_register_refuses_unknown_key_types_and_the_legacy_form() -> None:
    net = SecureNet()
    peer = net.connect()
    reply = register(peer, "alice", "1234", keytype=3)
    assert (reply.status, reply.data.value) == (Status.GENERIC_ERROR, "unknown key type 3")
    legacy = peer.request(lambda i: rp.Register(i, "alice", "1234", b"k", None))
    assert legacy.status == Status.GENERIC_ERROR and "not supported" in legacy.data.value
    assert net.security.public_key("alice") is None


def test_register_is_accepted_on_a_named_connection_too() -> None:
    net = SecureNet()
    peer = net.named("someone")
    assert register(peer, "other", "1234").status == 0


# -- unregister ------------------------------------------------------------------

def test_unregister_on_an_authenticated_connection() -> None:
    net = SecureNet()
    net.register("alice")
    peer = net.login("alice")
    reply = peer.request(lambda i: rp.Unregister(i))
    assert (reply.status, reply.data.value) == (0, None)
    assert net.security.public_key("alice") is None
    peer.close()
    assert net.connect().identify("alice").status == 0  # free mode again


@pytest.mark.parametrize("how", ["anonymous", "free", "other name"])
def test_unregister_needs_an_authenticated_connection(how: str) -> None:
    net = SecureNet()
    net.register("alice")
    if how == "anonymous":
        peer = net.connect()
        message: Any = lambda i: rp.Unregister(i)  # noqa: E731
    elif how == "free":
        peer = net.named("bob")
        message = lambda i: rp.Unregister(i)  # noqa: E731
    else:
        peer = net.login("alice")
        message = lambda i: rp.Unregister(i, "bob")  # noqa: E731
    reply = peer.request(message)
    assert (reply.status, reply.data.value) == (Status.GENERIC_ERROR, "invalid operation")
    assert net.security.public_key("alice") is not None


# -- authenticated mode -----------------------------------------------------------

def unsolicited(peer: Peer) -> bytes:
    [message] = [m for m in peer.take() if isinstance(m, rp.Response)]
    assert message.id == CONNECTION_ID and message.status == Status.CHALLENGE
    value = message.data.value
    assert isinstance(value, bytes) and len(value) == 4
    return value


def identity_held_for_alice() -> tuple[SecureNet, Peer, bytes, bytes]:
    """Authenticated mode: a connection that got the unsolicited challenge and sent
    IDENTITY of registered alice; returns the net, the peer, the challenge and the
    IDENTITY id."""
    net = SecureNet(AUTH)
    net.register("alice")
    peer = net.connect()
    net.pump()
    challenge = unsolicited(peer)
    identity_id = peer.new_id()
    peer.send(rp.Identity(identity_id, "alice"))
    return net, peer, challenge, identity_id


def test_authenticated_mode_challenges_at_once() -> None:
    net = SecureNet(AUTH)
    net.register("alice")
    peer = net.connect()
    net.pump()
    challenge = unsolicited(peer)
    reply = attest(peer, "alice", signature(challenge, "alice"), CONNECTION_ID)
    assert reply.status == 0 and peer.conn.twin.name == "alice"
    sub = net.connect()
    net.pump()
    sub_challenge = unsolicited(sub)
    net.register("bob", "ecdsa")
    assert attest(sub, "bob", signature(sub_challenge, "bob", "ecdsa"), CONNECTION_ID).status == 0
    sub.subscribe("t")
    peer.publish("t", 1)
    assert sub.pubs() == [("t", (1,))]


def test_authenticated_mode_holds_identity_until_the_attestation() -> None:
    _, peer, challenge, identity_id = identity_held_for_alice()
    assert peer.inbox == []
    peer.send(rp.Attestation(CONNECTION_ID, "alice", signature(challenge, "alice")))
    assert [(m.id, m.status) for m in responses(peer)] == [(CONNECTION_ID, 0), (identity_id, 0)]


def test_authenticated_mode_identity_of_an_unregistered_name_is_refused() -> None:
    net = SecureNet(AUTH)
    peer = net.connect()
    net.pump()
    unsolicited(peer)
    reply = peer.identify("nobody")
    assert_refused(net, peer, reply, "authentication required: nobody is not registered")


@pytest.mark.parametrize("what", ["pub", "rpc", "admin", "ack", "response"])
def test_authenticated_mode_closes_on_commands_before_login(what: str) -> None:
    net = SecureNet(AUTH)
    net.register("sub")
    listener = net.connect()
    net.pump()
    assert attest(listener, "sub", signature(unsolicited(listener), "sub"),
                  CONNECTION_ID).status == 0
    listener.subscribe("t")
    listener.expose("t")
    peer = net.connect()
    net.pump()
    unsolicited(peer)
    msg_id = peer.new_id()
    frames: dict[str, rp.Message] = {
        "pub": rp.Pub("t", rp.Payload.of([1])),
        "rpc": rp.Rpc(msg_id, "t", rp.NO_ARGS),
        "admin": rp.Admin(msg_id, "t", {"cmd": "subscribe"}),
        "ack": rp.Ack(msg_id),
        "response": rp.Response(msg_id, 0),
    }
    peer.send(frames[what])
    assert closed(net, peer) == [(CLOSE_UNAUTHENTICATED, "authentication required")]
    replies = [(m.id, m.status, m.data.value) for m in responses(peer)]
    if what in ("rpc", "admin"):
        assert replies == [(msg_id, Status.GENERIC_ERROR, "authentication required")]
    else:
        assert replies == []
    assert listener.take() == []  # nothing was routed


def test_authenticated_mode_closes_after_the_challenge_timeout() -> None:
    net, peer, _, identity_id = identity_held_for_alice()
    net.advance(2.9)
    assert closed(net, peer) == []
    net.advance(0.1)
    reason = "not authenticated within 3 seconds"
    assert closed(net, peer) == [(CLOSE_UNAUTHENTICATED, reason)]
    assert [(m.id, m.status, m.data.value) for m in responses(peer)] == [
        (identity_id, Status.GENERIC_ERROR, reason)]


def test_authenticated_mode_failed_attestation_answers_the_held_identity() -> None:
    net, peer, _, identity_id = identity_held_for_alice()
    peer.send(rp.Attestation(CONNECTION_ID, "alice", b"forged"))
    assert [(m.id, m.status) for m in responses(peer)] == [
        (CONNECTION_ID, Status.GENERIC_ERROR), (identity_id, Status.GENERIC_ERROR)]
    assert closed(net, peer) == [(CLOSE_UNAUTHENTICATED, "signature verification failed")]


def test_authenticated_mode_allows_registering_before_login() -> None:
    net = SecureNet(AUTH)
    peer = net.connect()
    net.pump()
    challenge = unsolicited(peer)
    assert register(peer, "newcomer", "1234").status == 0
    assert attest(peer, "newcomer", signature(challenge, "newcomer"), CONNECTION_ID).status == 0


def test_authenticated_mode_identity_for_another_name_than_attested() -> None:
    net = SecureNet(AUTH)
    net.register("alice")
    net.register("bob", "rsa", 1)
    peer = net.connect()
    net.pump()
    challenge = unsolicited(peer)
    identity_id = peer.new_id()
    peer.send(rp.Identity(identity_id, "bob"))
    peer.send(rp.Attestation(CONNECTION_ID, "alice", signature(challenge, "alice")))
    replies = [(m.id, m.status) for m in responses(peer)]
    assert replies == [(CONNECTION_ID, 0), (identity_id, Status.GENERIC_ERROR)]
    assert peer.conn.twin.name == "alice"


def test_authenticated_connection_is_not_screened_any_more() -> None:
    net = SecureNet(AUTH)
    net.register("alice")
    peer = net.connect()
    net.pump()
    assert attest(peer, "alice", signature(unsolicited(peer), "alice"),
                  CONNECTION_ID).status == 0
    assert peer.conn not in net.router.guard.gate
    assert peer.request(lambda i: rp.Rpc(i, "rid", rp.NO_ARGS)).data.value == "broker"
    net.advance(10.0)
    assert closed(net, peer) == []


def test_disconnect_forgets_the_security_state() -> None:
    net = SecureNet(AUTH)
    net.register("alice")
    peer = net.connect()
    net.pump()
    peer.close()
    guard = net.router.guard
    assert not guard.gate and not guard._pending and not guard.authenticated
    assert net.router.next_deadline() is not None


def test_keys_are_typed() -> None:
    assert public_key("rsa").keytype == RSA and public_key("ecdsa").keytype == ECDSA
