"""ClientConnection driven by hand-made frames and a fake clock (no sockets)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from client_helpers import SeqIds, ident, login, make, response, sent, state
from rembus_proto import (
    CONFIG_TOPIC,
    CONNECTION_ID,
    LAST_RECEIVED,
    Ack,
    Ack2,
    Admin,
    Attestation,
    EncodeError,
    Identity,
    MalformedMessage,
    Payload,
    ProtocolError,
    Pub,
    Register,
    Response,
    Rpc,
    Status,
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
ID8 = bytes(range(1, 9))


def golden(name: str) -> bytes:
    return bytes.fromhex(GOLDEN[name]["hex"])


def fixed_id(msg_id: bytes = ID8) -> Any:
    return lambda length: msg_id


def open_conn(**config: Any) -> ClientConnection:
    conn = make(**config)
    login(conn)
    conn.data_to_send()
    return conn


# ---------------------------------------------------------------- wire formats


class TestGoldenFrames:
    def test_identity_without_meta(self) -> None:
        conn = ClientConnection("mycomp", id_factory=fixed_id())
        conn.connect(0.0)
        assert conn.data_to_send() == [golden("identity_id8_no_meta")]

    def test_identity_with_meta(self) -> None:
        conn = ClientConnection("mycomp", id_factory=fixed_id(), meta={})
        conn.connect(0.0)
        assert conn.data_to_send() == [golden("identity_id8_with_meta")]

    def _open_with(self, msg_id: bytes) -> ClientConnection:
        ids = iter([bytes(8), msg_id])
        conn = ClientConnection("mycomp", id_factory=lambda n: next(ids))
        conn.connect(0.0)
        conn.receive_message(response(bytes(8)), 0.0)
        conn.data_to_send()
        return conn

    def test_rpc(self) -> None:
        conn = self._open_with(ID8)
        conn.rpc("add", (1, 2), now=0.0)
        assert conn.data_to_send() == [golden("rpc_add_1_2_id8")]

    def test_rpc_direct(self) -> None:
        conn = self._open_with(ID8)
        conn.rpc("add", [1, 2], target="calc", now=0.0)
        assert conn.data_to_send() == [golden("rpc_direct_id8")]

    def test_subscribe_now_and_last_received(self) -> None:
        conn = self._open_with(ID8)
        conn.subscribe("mytopic", now=0.0)
        assert conn.data_to_send() == [golden("admin_subscribe_now_id8")]
        conn.receive_message(response(ID8), 0.0)
        conn2 = self._open_with(ID8)
        conn2.subscribe("mytopic", msg_from=LAST_RECEIVED, now=0.0)
        assert conn2.data_to_send() == [golden("admin_subscribe_lastreceived_id8")]

    def test_expose(self) -> None:
        conn = self._open_with(ID8)
        conn.expose("add", now=0.0)
        assert conn.data_to_send() == [golden("admin_expose_id8")]

    def test_reactive(self) -> None:
        conn = self._open_with(ID8)
        conn.reactive(True, now=0.0)
        assert conn.data_to_send() == [golden("admin_reactive_on_id8")]
        conn2 = self._open_with(ID8)
        conn2.reactive(True, msg_from=86_400_000_000_000, now=0.0)
        assert conn2.data_to_send() == [golden("admin_reactive_on_1day_id8")]

    def test_publish_qos0(self) -> None:
        conn = open_conn()
        conn.publish("mytopic", (1, "a"), now=0.0)
        conn.publish("mytopic", [1, "a"], now=0.0)
        conn.publish("mytopic", Payload.of_args([1, "a"]), now=0.0)
        conn.publish("mytopic", (), now=0.0)
        assert conn.data_to_send() == [golden("pub_qos0_anonymous")] * 3 + [
            golden("pub_qos0_no_args")]

    def test_publish_qos1_qos2_ack2(self) -> None:
        conn = self._open_with(ID8)
        conn.publish("mytopic", (1, "a"), qos=1, now=0.0)
        assert conn.data_to_send() == [golden("pub_qos1_id8")]
        conn = self._open_with(ID8)
        conn.publish("mytopic", Payload.of_args((1, "a")), qos=2, now=0.0)
        assert conn.data_to_send() == [golden("pub_qos2_id8")]
        conn.receive_message(golden("ack_id8"), 0.0)
        assert conn.data_to_send() == [golden("ack2_id8")]

    def test_unregister(self) -> None:
        conn = self._open_with(ID8)
        conn.unregister(now=0.0)
        assert conn.data_to_send() == [golden("unregister_id8")]

    def test_method_not_found(self) -> None:
        conn = open_conn()
        conn.receive_message(Rpc(ID8, "nosuch", Payload.of_args([])).encode(), 0.0)
        assert conn.data_to_send() == [golden("res_method_not_found_python")]
        assert conn.events() == []

    def test_ack_of_received_qos(self) -> None:
        conn = open_conn()
        conn.receive_message(golden("pub_qos1_id8"), 0.0)
        assert conn.data_to_send() == [golden("ack_id8")]

    def test_g0_identity_with_16_byte_ids(self) -> None:
        conn = ClientConnection("mycomp", ClientConfig(id_length=16),
                                id_factory=lambda n: bytes(range(n)))
        conn.connect(0.0)
        assert conn.data_to_send() == [golden("g0_identity_id16")]


# ---------------------------------------------------------------- handshake


class TestHandshake:
    def test_anonymous_opens_at_once(self) -> None:
        conn = make(None)
        assert state(conn) is ConnectionState.DISCONNECTED
        conn.connect(0.0)
        assert state(conn) is ConnectionState.OPEN
        assert conn.events() == [Connected(None)]
        assert conn.data_to_send() == []
        assert conn.next_deadline() is None

    def test_anonymous_ignores_meta(self) -> None:
        conn = make(None, meta={"ws": 9000})
        conn.connect(0.0)
        assert conn.data_to_send() == []

    def test_named_login_ok_with_exports(self) -> None:
        conn = make("comp", meta={"ws": 9000})
        conn.connect(5.0)
        assert state(conn) is ConnectionState.HANDSHAKING
        assert sent(conn) == [Identity(ident(1), "comp", {"ws": 9000})]
        assert conn.next_deadline() == 15.0
        conn.receive_message(response(ident(1), 0, [["add"], ["temp"]]), 6.0)
        assert state(conn) is ConnectionState.OPEN
        assert conn.events() == [Connected([["add"], ["temp"]])]
        assert conn.next_deadline() is None

    def test_named_login_ok_null(self) -> None:
        conn = make()
        assert login(conn) == [Connected(None)]

    def test_challenge(self) -> None:
        conn = make("mycomp")
        conn.connect(0.0)
        conn.data_to_send()
        conn.receive_message(golden("res_challenge_id8").replace(ID8, ident(1)), 1.0)
        assert state(conn) is ConnectionState.CHALLENGED
        assert conn.events() == [ChallengeRequested(b"\x01\x02\x03\x04", "mycomp")]
        assert conn.next_deadline() == 11.0
        conn.attest(b"sig", 2.0)
        assert sent(conn) == [Attestation(ident(2), "mycomp", b"sig")]
        with pytest.raises(InvalidState, match="already"):
            conn.attest(b"sig", 2.0)
        conn.receive_message(response(ident(2), 0, None), 3.0)
        assert state(conn) is ConnectionState.OPEN
        assert conn.events() == [Connected(None)]

    def test_challenge_with_meta_and_refused(self) -> None:
        conn = make("mycomp", meta={})
        conn.connect(0.0)
        conn.data_to_send()
        conn.receive_message(response(ident(1), 11, b"abcd"), 0.0)
        conn.events()
        conn.attest(bytearray(b"sig"), 0.0)
        assert sent(conn) == [Attestation(ident(2), "mycomp", b"sig", {})]
        conn.receive_message(response(ident(2), 10, "bad signature"), 0.0)
        assert state(conn) is ConnectionState.CLOSED
        assert conn.events() == [LoginRefused(10, "bad signature")]
        assert conn.next_deadline() is None

    def test_unsolicited_challenge_before_identity_reply(self) -> None:
        conn = make("mycomp")
        conn.connect(0.0)
        conn.data_to_send()
        conn.receive_message(golden("unsolicited_challenge_connection_id"), 0.0)
        assert state(conn) is ConnectionState.CHALLENGED
        assert conn.events() == [ChallengeRequested(b"\x01\x02\x03\x04", "mycomp")]
        conn.attest(b"sig", 0.0)
        assert sent(conn) == [Attestation(CONNECTION_ID, "mycomp", b"sig")]
        conn.receive_message(response(CONNECTION_ID, 0, None), 0.0)
        assert conn.events() == [Connected(None)]
        # The held IDENTITY reply arrives afterwards and is ignored.
        conn.receive_message(response(ident(1), 0, None), 0.0)
        assert conn.events() == [] and conn.data_to_send() == []
        assert state(conn) is ConnectionState.OPEN

    def test_unsolicited_challenge_then_identity_reply_first(self) -> None:
        conn = make("mycomp")
        conn.connect(0.0)
        conn.receive_message(golden("unsolicited_challenge_connection_id"), 0.0)
        conn.attest(b"sig", 0.0)
        conn.receive_message(response(ident(1), 0, None), 0.0)
        conn.receive_message(response(CONNECTION_ID, 0, None), 0.0)
        assert [type(e) for e in conn.events()] == [ChallengeRequested, Connected]

    def test_unsolicited_challenge_for_anonymous_fails_login(self) -> None:
        conn = make(None)
        conn.connect(0.0)
        conn.events()
        conn.receive_message(golden("unsolicited_challenge_connection_id"), 0.0)
        [event] = conn.events()
        assert isinstance(event, LoginRefused) and event.status == Status.CHALLENGE
        assert state(conn) is ConnectionState.CLOSED

    def test_unsolicited_challenge_waits_for_a_register_in_flight(self) -> None:
        conn = make(None)
        conn.connect(0.0)
        conn.events()
        h = conn.register("mycomp", "11223344", b"-----BEGIN PUBLIC KEY-----", 2, now=0.0)
        conn.receive_message(golden("unsolicited_challenge_connection_id"), 0.0)
        assert conn.events() == [] and state(conn) is ConnectionState.OPEN
        conn.receive_message(response(ident(1), 0, None), 0.0)
        assert conn.events() == [RequestCompleted(h, 0, Payload.of(None))]

    def test_unsolicited_challenge_when_open_and_named_is_ignored(self) -> None:
        conn = open_conn()
        conn.receive_message(golden("unsolicited_challenge_connection_id"), 0.0)
        assert conn.events() == [] and state(conn) is ConnectionState.OPEN

    @pytest.mark.parametrize(("status", "reason"), [(10, "already connected"), (10, None),
                                                    (60, "x"), (20, [1])])
    def test_login_refused(self, status: int, reason: Any) -> None:
        conn = make()
        conn.connect(0.0)
        conn.receive_message(response(ident(1), status, reason), 0.0)
        assert conn.events() == [LoginRefused(status, reason)]
        assert state(conn) is ConnectionState.CLOSED
        conn.receive_message(b"garbage", 0.0)  # ignored once closed
        conn.connection_lost(0.0)
        assert state(conn) is ConnectionState.CLOSED
        # The driver may try again with a new transport.
        conn.connect(1.0)
        assert state(conn) is ConnectionState.HANDSHAKING

    def test_login_timeout(self) -> None:
        conn = make(request_timeout=3.0)
        conn.connect(0.0)
        conn.handle_timer(2.9)
        assert conn.events() == []
        conn.handle_timer(3.0)
        [event] = conn.events()
        assert isinstance(event, LoginRefused) and event.status == Status.TIMEOUT
        assert state(conn) is ConnectionState.CLOSED
        assert conn.next_deadline() is None

    def test_challenge_timeout_waiting_for_attest(self) -> None:
        conn = make(request_timeout=3.0)
        conn.connect(0.0)
        conn.receive_message(response(ident(1), 11, b"abcd"), 1.0)
        assert conn.next_deadline() == 4.0
        conn.handle_timer(4.0)
        assert isinstance(conn.events()[-1], LoginRefused)

    def test_challenge_must_be_bytes(self) -> None:
        conn = make()
        conn.connect(0.0)
        with pytest.raises(ProtocolError):
            conn.receive_message(response(ident(1), 11, "text"), 0.0)
        assert state(conn) is ConnectionState.HANDSHAKING

    def test_login_response_with_bad_payload_keeps_state(self) -> None:
        conn = make()
        conn.connect(0.0)
        bad = Response(ident(1), 0, Payload(raw=b"\x82\x01")).encode()
        with pytest.raises(ProtocolError):
            conn.receive_message(bad, 0.0)
        assert state(conn) is ConnectionState.HANDSHAKING

    def test_lifecycle_misuse(self) -> None:
        conn = make()
        with pytest.raises(InvalidState, match="ChallengeRequested"):
            conn.attest(b"x", 0.0)
        conn.connect(0.0)
        with pytest.raises(InvalidState, match="connection_lost"):
            conn.connect(0.0)
        conn.receive_message(response(ident(1), 11, b"abcd"), 0.0)
        with pytest.raises(TypeError, match="signature"):
            conn.attest("sig", 0.0)  # type: ignore[arg-type]

    def test_connection_lost_during_handshake(self) -> None:
        conn = make()
        conn.connect(0.0)
        conn.connection_lost(1.0)
        assert state(conn) is ConnectionState.DISCONNECTED
        assert conn.next_deadline() is None
        assert conn.events() == []
        conn.receive_message(response(ident(1)), 1.0)  # ignored while disconnected
        assert conn.events() == []

    def test_messages_before_login_are_handled(self) -> None:
        conn = make()
        conn.connect(0.0)
        conn.data_to_send()
        conn.receive_message(Pub("t", Payload.of_args([1])).encode(), 0.0)
        assert conn.events() == [PublicationReceived("t", Payload.of_args([1]), 0)]


# ---------------------------------------------------------------- requests


class TestRequests:
    def test_rpc_ok_and_error(self) -> None:
        conn = open_conn()
        h1 = conn.rpc("add", (1, 2), now=0.0)
        h2 = conn.rpc("boom", [], now=0.0)
        assert h1 != h2
        assert conn.pending_count == 2
        [r1, r2] = sent(conn)
        assert r1 == Rpc(r1.id, "add", Payload.of_args([1, 2]))
        conn.receive_message(response(r2.id, 40, "kaboom"), 1.0)
        conn.receive_message(golden("res_ok_3_id8_julia_int64").replace(ID8, r1.id), 1.0)
        [e2, e1] = conn.events()
        assert e2 == RequestCompleted(h2, 40, Payload.of("kaboom"))
        assert isinstance(e1, RequestCompleted) and e1.handle == h1 and e1.status == 0
        assert e1.data.value == 3
        assert conn.pending_count == 0
        assert conn.next_deadline() is None

    def test_rpc_payload_args(self) -> None:
        conn = open_conn()
        conn.rpc("f", Payload.of({"a": 1}), now=0.0)
        [msg] = sent(conn)
        assert isinstance(msg, Rpc) and msg.data.value == {"a": 1}

    def test_rpc_timeout_and_late_response(self) -> None:
        conn = open_conn(request_timeout=5.0)
        h = conn.rpc("slow", (), now=10.0)
        h_short = conn.rpc("slow", (), now=10.0, timeout=1)
        [m1, m2] = sent(conn)
        assert conn.next_deadline() == 11.0
        conn.handle_timer(11.0)
        assert conn.events() == [RequestTimedOut(h_short)]
        assert conn.next_deadline() == 15.0
        conn.handle_timer(14.999)
        assert conn.events() == []
        conn.handle_timer(15.0)
        assert conn.events() == [RequestTimedOut(h)]
        conn.receive_message(response(m1.id, 0, 1), 16.0)
        conn.receive_message(response(m2.id, 0, 1), 16.0)
        assert conn.events() == []

    def test_abort_on_connection_loss(self) -> None:
        conn = open_conn()
        h1 = conn.rpc("a", (), now=0.0)
        h2 = conn.admin(CONFIG_TOPIC, {"cmd": "broker_config"}, now=0.0)
        [m1, _] = sent(conn)
        conn.connection_lost(1.0)
        assert state(conn) is ConnectionState.DISCONNECTED
        assert conn.events() == [RequestAborted(h1, "connection lost"),
                                 RequestAborted(h2, "connection lost")]
        assert conn.next_deadline() is None
        conn.connection_lost(1.0)
        assert conn.events() == []
        with pytest.raises(NotConnected, match="Connected"):
            conn.rpc("a", (), now=1.0)
        login(conn, 2.0)
        conn.receive_message(response(m1.id), 2.0)
        assert conn.events() == []

    def test_admin_request(self) -> None:
        conn = open_conn()
        h = conn.admin(CONFIG_TOPIC, {"cmd": "broker_config"}, now=0.0)
        [msg] = sent(conn)
        assert msg == Admin(msg.id, CONFIG_TOPIC, {"cmd": "broker_config"})
        conn.receive_message(response(msg.id, 0, {"exposers": {}}), 0.0)
        [event] = conn.events()
        assert isinstance(event, RequestCompleted) and event.handle == h
        assert event.data.value == {"exposers": {}}
        with pytest.raises(ValueError, match="cmd"):
            conn.admin("t", {"nocmd": 1}, now=0.0)
        with pytest.raises(ValueError, match="cmd"):
            conn.admin("t", ["cmd"], now=0.0)  # type: ignore[arg-type]

    def test_subscribe_unknown_admin_status(self) -> None:
        conn = open_conn()
        h = conn.subscribe("t", now=0.0)
        [msg] = sent(conn)
        conn.receive_message(response(msg.id, 47), 0.0)
        assert conn.events() == [RequestCompleted(h, 47, Payload.of(None))]  # type: ignore[arg-type]
        assert dict(conn.subscriptions) == {"t": 0.0}

    def test_register_and_unregister(self) -> None:
        conn = make(None)
        conn.connect(0.0)
        conn.events()
        h = conn.register("mycomp", "11223344", b"-----BEGIN PUBLIC KEY-----", 2, now=0.0)
        h2 = conn.unregister(now=0.0)
        [reg, unreg] = sent(conn)
        assert reg == Register(ident(1), "mycomp", "11223344", b"-----BEGIN PUBLIC KEY-----", 2)
        assert unreg == Unregister(ident(2))
        conn.receive_message(response(ident(1), 60, "name already taken"), 0.0)
        conn.receive_message(response(ident(2), 10, "invalid operation"), 0.0)
        assert conn.events() == [
            RequestCompleted(h, 60, Payload.of("name already taken")),
            RequestCompleted(h2, 10, Payload.of("invalid operation")),
        ]

    def test_register_validation(self) -> None:
        conn = open_conn()
        with pytest.raises(ValueError, match="keytype"):
            conn.register("n", "1", b"k", 3, now=0.0)
        with pytest.raises(TypeError, match="keytype"):
            conn.register("n", "1", b"k", True, now=0.0)
        with pytest.raises(TypeError, match="pubkey"):
            conn.register("n", "1", "k", 1, now=0.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="pin"):
            conn.register("n", 1, b"k", 1, now=0.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="empty"):
            conn.register("", "1", b"k", 1, now=0.0)
        with pytest.raises(TypeError, match="name"):
            conn.register(None, "1", b"k", 1, now=0.0)  # type: ignore[arg-type]
        assert conn.data_to_send() == []

    def test_too_many_pending(self) -> None:
        conn = open_conn(max_pending_requests=2)
        conn.rpc("a", (), now=0.0)
        conn.subscribe("t", now=0.0)
        with pytest.raises(TooManyPending, match="max_pending_requests"):
            conn.rpc("a", (), now=0.0)
        with pytest.raises(TooManyPending):
            conn.subscribe("u", now=0.0)
        assert "u" not in conn.subscriptions
        assert len(conn.data_to_send()) == 2

    def test_unknown_response_id_is_ignored(self) -> None:
        conn = open_conn()
        conn.receive_message(response(b"nobodyid", 0, 1), 0.0)
        conn.receive_message(Ack(b"nobodyid").encode(), 0.0)
        conn.receive_message(Ack2(b"nobodyid").encode(), 0.0)
        conn.receive_message(Identity(b"x", "someone").encode(), 0.0)
        conn.receive_message(Attestation(b"x", "someone", b"s").encode(), 0.0)
        conn.receive_message(Register(b"x", "a", "b", b"c").encode(), 0.0)
        conn.receive_message(Unregister(b"x").encode(), 0.0)
        assert conn.events() == [] and conn.data_to_send() == []

    def test_every_request_ends_once_even_when_closed(self) -> None:
        conn = open_conn()
        h = conn.rpc("a", (), now=0.0)
        conn.close()
        assert conn.events() == [RequestAborted(h, "connection closed")]
        assert state(conn) is ConnectionState.CLOSED
        conn.close()
        assert conn.events() == []


# ---------------------------------------------------------------- incoming rpc / admin


class TestIncoming:
    def test_rpc_for_exposed_topic_and_respond(self) -> None:
        conn = open_conn()
        conn.expose("add", now=0.0)
        [exp] = sent(conn)
        conn.receive_message(response(exp.id), 0.0)
        conn.events()
        conn.receive_message(Rpc(ID8, "add", Payload.of_args([1, 2]), "comp").encode(), 0.0)
        [event] = conn.events()
        assert event == RequestReceived(ID8, "add", Payload.of_args([1, 2]), "comp")
        assert isinstance(event, RequestReceived) and event.data.args == (1, 2)
        conn.respond(ID8, value=3)
        assert conn.data_to_send() == [golden("res_ok_3_id8")]
        conn.respond(ID8, value=4)  # already answered: dropped
        assert conn.data_to_send() == []

    def test_respond_error_and_payload(self) -> None:
        conn = open_conn()
        conn.expose("f", now=0.0)
        conn.data_to_send()
        conn.receive_message(Rpc(ID8, "f", Payload.of_args([])).encode(), 0.0)
        conn.respond(ID8, Status.METHOD_EXCEPTION, "kaboom")
        assert conn.data_to_send() == [golden("res_method_exception")]
        conn.receive_message(Rpc(ID8, "f", Payload.of_args([])).encode(), 0.0)
        conn.respond(ID8, 0, Payload(raw=b"\xf6"))
        assert conn.data_to_send() == [golden("res_ok_null_id8")]

    def test_respond_validation(self) -> None:
        conn = open_conn()
        conn.expose("f", now=0.0)
        conn.receive_message(Rpc(ID8, "f", Payload.of_args([])).encode(), 0.0)
        conn.data_to_send()
        with pytest.raises(EncodeError):
            conn.respond(ID8, 0, object())
        with pytest.raises(TypeError, match="request_id"):
            conn.respond("id", 0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="status"):
            conn.respond(ID8, "0")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            conn.respond(ID8, -1)
        conn.respond(ID8, 0, 1)  # still answerable after the failed attempts
        assert len(conn.data_to_send()) == 1

    def test_respond_after_reconnect_is_dropped(self) -> None:
        conn = open_conn()
        conn.expose("f", now=0.0)
        conn.receive_message(Rpc(ID8, "f", Payload.of_args([])).encode(), 0.0)
        conn.connection_lost(1.0)
        login(conn, 2.0)
        conn.data_to_send()
        conn.respond(ID8, 0, 1)
        assert conn.data_to_send() == []

    def test_rpc_after_unexpose_gets_42(self) -> None:
        conn = open_conn()
        conn.expose("f", now=0.0)
        conn.unexpose("f", now=0.0)
        conn.data_to_send()
        conn.receive_message(Rpc(ID8, "f", Payload.of_args([])).encode(), 0.0)
        assert sent(conn) == [Response(ID8, 42, Payload.of("f"))]

    def test_incoming_requests_are_bounded(self) -> None:
        conn = open_conn(max_pending_requests=2)
        conn.expose("f", now=0.0)
        conn.data_to_send()
        for i in range(3):
            conn.receive_message(Rpc(ident(100 + i), "f", Payload.of_args([])).encode(), 0.0)
        assert len(conn.events()) == 2
        [refusal] = sent(conn)
        assert refusal == Response(ident(102), 10, Payload.of("too many requests in progress"))

    def test_broker_admin_gets_ok(self) -> None:
        conn = open_conn()
        flood = Admin(ID8, "foo", {"cmd": "subscribe", "msg_from": 0.0, "rmark": [1],
                                   "touch": ["comp"]})
        conn.receive_message(flood.encode(), 0.0)
        assert conn.data_to_send() == [golden("res_ok_null_id8")]
        assert conn.events() == []
        assert dict(conn.subscriptions) == {}


# ---------------------------------------------------------------- QoS


class TestQosSender:
    def test_qos1_resend_same_id_then_ack(self) -> None:
        conn = open_conn(ack_timeout=2.0)
        h = conn.publish("t", (1,), qos=1, now=0.0)
        assert isinstance(h, int)
        [first] = conn.data_to_send()
        assert conn.next_deadline() == 2.0
        conn.handle_timer(1.0)
        assert conn.data_to_send() == []
        conn.handle_timer(2.0)
        assert conn.data_to_send() == [first]
        assert conn.next_deadline() == 4.0
        conn.receive_message(Ack(decode(first).id).encode(), 3.0)  # type: ignore[arg-type]
        assert conn.events() == [PublishAcked(h)]
        assert conn.data_to_send() == []
        assert conn.next_deadline() is None
        assert conn.unacked_count == 0
        conn.receive_message(Ack(decode(first).id).encode(), 3.0)  # type: ignore[arg-type]
        assert conn.events() == []

    def test_give_up_after_retries(self) -> None:
        conn = open_conn(ack_timeout=1.0, send_retries=3)
        h = conn.publish("t", (), qos=2, now=0.0)
        [first] = conn.data_to_send()
        for t in (1.0, 2.0, 3.0):
            conn.handle_timer(t)
            assert conn.data_to_send() == [first]
        conn.handle_timer(4.0)
        assert conn.data_to_send() == []
        assert conn.events() == [PublishFailed(h, "no ACK after 3 resends")]
        assert conn.next_deadline() is None

    def test_zero_retries(self) -> None:
        conn = open_conn(ack_timeout=1.0, send_retries=0)
        h = conn.publish("t", (), qos=1, now=0.0)
        conn.data_to_send()
        conn.handle_timer(1.0)
        assert conn.data_to_send() == []
        assert conn.events() == [PublishFailed(h, "no ACK after 0 resends")]

    def test_qos2_ack_sends_ack2(self) -> None:
        conn = open_conn()
        h = conn.publish("t", (), qos=2, now=0.0)
        [msg] = sent(conn)
        assert isinstance(msg, Pub) and msg.qos == 2
        conn.receive_message(Ack(msg.id).encode(), 0.5)  # type: ignore[arg-type]
        assert sent(conn) == [Ack2(msg.id)]  # type: ignore[arg-type]
        assert conn.events() == [PublishAcked(h)]

    def test_unacked_resent_after_reconnect_with_same_id(self) -> None:
        conn = open_conn(ack_timeout=1.0, send_retries=1)
        h = conn.publish("t", ("x",), qos=1, now=0.0)
        [frame] = conn.data_to_send()
        conn.handle_timer(1.0)
        assert conn.data_to_send() == [frame]
        conn.connection_lost(1.5)
        assert conn.events() == []
        assert conn.next_deadline() is None
        conn.handle_timer(100.0)
        assert conn.events() == [] and conn.data_to_send() == []
        login(conn, 200.0)
        assert conn.data_to_send() == [frame]
        assert conn.next_deadline() == 201.0
        conn.handle_timer(201.0)
        assert conn.events() == [PublishFailed(h, "no ACK after 1 resends")]

    def test_too_many_unacked(self) -> None:
        conn = open_conn(max_unacked_publishes=2)
        conn.publish("t", (), qos=1, now=0.0)
        conn.publish("t", (), qos=2, now=0.0)
        with pytest.raises(TooManyPending, match="max_unacked_publishes"):
            conn.publish("t", (), qos=1, now=0.0)
        conn.publish("t", (), now=0.0)  # QoS0 is not limited
        assert len(conn.data_to_send()) == 3


class TestQosReceiver:
    def test_qos1_ack_every_copy_and_deliver_every_copy(self) -> None:
        conn = open_conn()
        frame = Pub("t", Payload.of_args([1]), ID8, 0x10).encode()
        conn.receive_message(frame, 0.0)
        conn.receive_message(frame, 0.0)
        assert sent(conn) == [Ack(ID8), Ack(ID8)]
        assert conn.events() == [PublicationReceived("t", Payload.of_args([1]), 1)] * 2

    def test_qos2_dedup_until_ack2(self) -> None:
        conn = open_conn()
        frame = golden("pub_qos2_id8")
        conn.receive_message(frame, 0.0)
        conn.receive_message(frame, 0.0)
        assert sent(conn) == [Ack(ID8), Ack(ID8)]
        [event] = conn.events()
        assert event == PublicationReceived("mytopic", Payload.of_args([1, "a"]), 2)
        conn.receive_message(golden("ack2_id8"), 0.0)
        assert conn.data_to_send() == []
        conn.receive_message(frame, 0.0)
        assert len(conn.events()) == 1

    def test_dedup_survives_reconnect(self) -> None:
        conn = open_conn()
        conn.receive_message(golden("pub_qos2_id8"), 0.0)
        conn.connection_lost(0.0)
        login(conn, 1.0)
        conn.events()
        conn.receive_message(golden("pub_qos2_id8"), 1.0)
        assert conn.events() == []

    def test_driver_acknowledges_after_the_handler(self) -> None:
        conn = open_conn(ack_on_receipt=False)
        frame = Pub("t", Payload.of_args([1]), ID8, 0x10).encode()
        conn.receive_message(frame, 0.0)
        assert sent(conn) == []
        assert conn.events() == [PublicationReceived("t", Payload.of_args([1]), 1, ID8)]
        conn.acknowledge(ID8)
        assert sent(conn) == [Ack(ID8)]

    def test_qos2_copy_before_the_ack_waits_for_it_and_after_it_is_acked_again(self) -> None:
        conn = open_conn(ack_on_receipt=False)
        frame = golden("pub_qos2_id8")
        conn.receive_message(frame, 0.0)
        [event] = conn.events()
        assert event.msg_id == ID8
        conn.receive_message(frame, 0.0)  # the first copy is still with its handler
        assert sent(conn) == [] and conn.events() == []
        conn.acknowledge(ID8)
        conn.receive_message(frame, 0.0)  # our ACK was lost: ACK again, deliver once
        assert sent(conn) == [Ack(ID8), Ack(ID8)] and conn.events() == []

    def test_released_qos2_is_delivered_again(self) -> None:
        conn = open_conn(ack_on_receipt=False)
        frame = golden("pub_qos2_id8")
        conn.receive_message(frame, 0.0)
        conn.events()
        conn.release(ID8)
        conn.receive_message(frame, 0.0)
        assert len(conn.events()) == 1 and sent(conn) == []

    def test_acknowledge_while_disconnected_sends_nothing(self) -> None:
        conn = open_conn(ack_on_receipt=False)
        conn.receive_message(golden("pub_qos2_id8"), 0.0)
        conn.events()
        conn.connection_lost(0.0)
        conn.acknowledge(ID8)
        assert conn.data_to_send() == []
        login(conn, 1.0)
        conn.data_to_send()
        conn.events()
        conn.receive_message(golden("pub_qos2_id8"), 1.0)  # the broker's resend
        assert sent(conn) == [Ack(ID8)] and conn.events() == []

    def test_dedup_set_is_bounded_fifo(self) -> None:
        conn = open_conn(qos2_dedup_size=2)
        frames = [Pub("t", Payload.of_args([]), ident(i), 0x30).encode() for i in range(3)]
        for frame in frames:
            conn.receive_message(frame, 0.0)
        assert len(conn.events()) == 3
        conn.receive_message(frames[2], 0.0)
        conn.receive_message(frames[1], 0.0)
        assert conn.events() == []
        conn.receive_message(frames[0], 0.0)  # evicted first, so delivered again
        assert len(conn.events()) == 1

    def test_slot_and_qos0_forms(self) -> None:
        conn = open_conn()
        conn.receive_message(golden("pub_slot_qos0"), 0.0)
        conn.receive_message(golden("keyspace_delivery"), 0.0)
        assert conn.data_to_send() == []
        e1, e2 = conn.events()
        assert e1 == PublicationReceived("mytopic", Payload.of_args([1, "a"]), 0)
        assert isinstance(e2, PublicationReceived) and e2.topic == "house/*/temp"
        assert e2.data.args == ("house/kitchen/temp", 21.5)


# ---------------------------------------------------------------- restore and outbox


class TestRestore:
    def test_restore_order_and_frames(self) -> None:
        conn = make("comp", ack_timeout=1.0, request_timeout=10.0)
        assert conn.subscribe("a", now=0.0) is None
        assert conn.subscribe("b", msg_from=LAST_RECEIVED, now=0.0) is None
        assert conn.expose("f", now=0.0) is None
        assert conn.reactive(True, now=0.0) is None
        assert conn.publish("t", (1,), now=0.0) is None
        h = conn.publish("t", (2,), qos=1, now=0.0)
        assert conn.outbox_len == 2
        assert conn.data_to_send() == []
        login(conn, 5.0)
        msgs = sent(conn)
        assert msgs == [
            Admin(ident(3), "a", {"cmd": "subscribe", "msg_from": 0.0}),
            Admin(ident(4), "b", {"cmd": "subscribe", "msg_from": math.inf}),
            Admin(ident(5), "f", {"cmd": "expose"}),
            Admin(ident(6), CONFIG_TOPIC, {"cmd": "reactive", "status": True}),
            Pub("t", Payload.of_args([1])),
            Pub("t", Payload.of_args([2]), ident(1), 0x10),
        ]
        assert conn.outbox_len == 0
        assert conn.next_deadline() == 6.0
        # A second connection: the same state again, then the unacked publication.
        conn.connection_lost(7.0)
        login(conn, 8.0)
        msgs2 = sent(conn)
        assert [type(m) for m in msgs2] == [Admin, Admin, Admin, Admin, Pub]
        assert msgs2[-1] == msgs[-1]
        for m in msgs2[:4]:
            conn.receive_message(response(m.id), 8.0)
        conn.receive_message(Ack(ident(1)).encode(), 8.0)
        assert conn.events() == [PublishAcked(h)]

    def test_unacked_publications_go_again_before_the_outbox(self) -> None:
        conn = open_conn()
        for i in range(3):
            conn.publish("t", (i,), qos=1 + i % 2, now=0.0)
        conn.data_to_send()
        conn.connection_lost(1.0)
        conn.publish("t", (3,), now=1.0)
        conn.publish("t", (4,), qos=1, now=1.0)
        login(conn, 2.0)
        pubs = [m for m in sent(conn) if isinstance(m, Pub)]
        assert [m.data.args for m in pubs] == [(0,), (1,), (2,), (3,), (4,)]

    def test_restore_after_reconnect_of_state_made_online(self) -> None:
        conn = open_conn()
        conn.subscribe("a", msg_from=1000, now=0.0)
        conn.expose("f", now=0.0)
        conn.reactive(True, msg_from=5, now=0.0)
        conn.data_to_send()
        conn.connection_lost(0.0)
        assert [type(e) for e in conn.events()] == [RequestAborted] * 3
        login(conn, 1.0)
        assert [m.command for m in sent(conn)] == [
            {"cmd": "subscribe", "msg_from": 1000}, {"cmd": "expose"},
            {"cmd": "reactive", "status": True, "msg_from": 5}]

    def test_restore_errors_become_restore_failed(self) -> None:
        conn = make(request_timeout=2.0)
        conn.subscribe("a", now=0.0)
        conn.expose("f", now=0.0)
        conn.reactive(True, now=0.0)
        login(conn, 0.0)
        sub, exp, rea = sent(conn)
        conn.receive_message(response(sub.id, 10, "unauthorized"), 0.0)
        conn.receive_message(response(exp.id, 0), 0.0)
        assert conn.events() == [RestoreFailed("a", "subscribe", 10, "unauthorized")]
        conn.handle_timer(2.0)
        assert conn.events() == [RestoreFailed(CONFIG_TOPIC, "reactive", Status.TIMEOUT,
                                               "no answer within the request timeout")]
        conn.receive_message(response(rea.id, 0), 0.0)
        assert conn.events() == []
        assert conn.next_deadline() is None

    def test_restore_requests_dropped_silently_on_loss(self) -> None:
        conn = make()
        conn.subscribe("a", now=0.0)
        login(conn)
        conn.connection_lost(1.0)
        assert conn.events() == []
        assert conn.pending_count == 0

    def test_offline_unsubscribe_is_sent_on_connect(self) -> None:
        conn = open_conn()
        conn.subscribe("a", now=0.0)
        conn.subscribe("b", now=0.0)
        conn.expose("f", now=0.0)
        conn.data_to_send()
        conn.connection_lost(0.0)
        conn.events()
        assert conn.unsubscribe("a", now=0.0) is None
        assert conn.unexpose("f", now=0.0) is None
        assert conn.unsubscribe("b", now=0.0) is None
        conn.subscribe("b", now=0.0)  # changed its mind: nothing to remove
        login(conn, 1.0)
        msgs = sent(conn)
        assert [(m.topic, m.command["cmd"]) for m in msgs] == [
            ("a", "unsubscribe"), ("f", "unexpose"), ("b", "subscribe")]
        # Refusals of removals do not matter.
        conn.receive_message(response(msgs[0].id, 10, "not subscribed"), 1.0)
        assert conn.events() == []
        conn.connection_lost(1.0)
        login(conn, 2.0)
        assert [m.topic for m in sent(conn)] == ["b"]

    def test_anonymous_offline_unsubscribe_sends_nothing(self) -> None:
        conn = make(None)
        conn.subscribe("a", now=0.0)
        conn.unsubscribe("a", now=0.0)
        conn.connect(0.0)
        assert conn.data_to_send() == []

    def test_properties(self) -> None:
        conn = make()
        conn.subscribe("a", msg_from=5.0, now=0.0)
        conn.expose("f", now=0.0)
        conn.reactive(True, now=0.0)
        assert dict(conn.subscriptions) == {"a": 5.0}
        assert conn.exposed == frozenset({"f"})
        assert conn.is_reactive
        with pytest.raises(TypeError):
            conn.subscriptions["b"] = 1.0  # type: ignore[index]
        conn.reactive(False, now=0.0)
        login(conn)
        assert [m.command["cmd"] for m in sent(conn)] == ["subscribe", "expose"]
        conn.unsubscribe("a", now=0.0)
        conn.unexpose("f", now=0.0)
        assert dict(conn.subscriptions) == {} and conn.exposed == frozenset()
        assert "ClientConnection comp OPEN" in repr(conn)


class TestOutbox:
    def test_error_policy(self) -> None:
        conn = make(outbox_size=2)
        conn.publish("t", (1,), now=0.0)
        conn.publish("t", (2,), qos=1, now=0.0)
        with pytest.raises(OutboxFull, match="outbox_size"):
            conn.publish("t", (3,), now=0.0)
        with pytest.raises(OutboxFull):
            conn.publish("t", (3,), qos=2, now=0.0)
        assert conn.outbox_len == 2 and conn.unacked_count == 1
        assert conn.events() == []

    def test_drop_oldest(self) -> None:
        conn = make(outbox_size=2, outbox_overflow="drop_oldest")
        h1 = conn.publish("t", (1,), qos=1, now=0.0)
        conn.publish("t", (2,), now=0.0)
        conn.publish("t", (3,), now=0.0)
        assert conn.events() == [PublishFailed(h1, "dropped from the full outbox")]
        conn.publish("t", (4,), now=0.0)
        assert conn.unacked_count == 0
        login(conn)
        assert [m.data.value for m in sent(conn)] == [[3], [4]]

    def test_drop_newest(self) -> None:
        conn = make(outbox_size=1, outbox_overflow="drop_newest")
        conn.publish("t", (1,), now=0.0)
        conn.publish("t", (2,), now=0.0)
        h = conn.publish("t", (3,), qos=2, now=0.0)
        assert isinstance(h, int)
        assert conn.events() == [PublishFailed(h, "outbox full")]
        assert conn.unacked_count == 0
        login(conn)
        assert [m.data.value for m in sent(conn)] == [[1]]

    def test_payload_publications_are_queued_too(self) -> None:
        conn = make()
        conn.publish("t", Payload.of_args([1]), now=0.0)
        h = conn.publish("t", Payload(raw=b"\x81\x02"), qos=1, now=0.0)
        login(conn)
        assert sent(conn) == [Pub("t", Payload.of_args([1])),
                              Pub("t", Payload.of_args([2]), ident(1), 0x10)]
        conn.receive_message(Ack(ident(1)).encode(), 0.0)
        assert conn.events() == [PublishAcked(h)]

    def test_zero_size_outbox(self) -> None:
        conn = make(outbox_size=0, outbox_overflow="drop_oldest")
        h = conn.publish("t", (1,), qos=1, now=0.0)
        assert conn.events() == [PublishFailed(h, "outbox full")]
        assert conn.outbox_len == 0

    def test_outbox_during_handshake_and_when_closed(self) -> None:
        conn = make()
        conn.connect(0.0)
        conn.data_to_send()
        conn.publish("t", (1,), now=0.0)
        with pytest.raises(NotConnected):
            conn.rpc("f", (), now=0.0)
        conn.receive_message(response(ident(1), 10, "already connected"), 0.0)
        conn.publish("t", (2,), now=0.0)
        assert conn.outbox_len == 2
        login(conn, 1.0)
        assert [m.data.value for m in sent(conn)] == [[1], [2]]

    def test_close_fails_queued_and_unacked(self) -> None:
        conn = open_conn()
        h1 = conn.publish("t", (), qos=1, now=0.0)
        conn.connection_lost(0.0)
        h2 = conn.publish("t", (), qos=2, now=0.0)
        conn.publish("t", (), now=0.0)
        conn.close()
        assert conn.events() == [PublishFailed(h1, "connection closed"),
                                 PublishFailed(h2, "connection closed")]
        assert conn.outbox_len == 0 and conn.unacked_count == 0
        assert conn.data_to_send() == []


# ---------------------------------------------------------------- misuse


class TestMisuse:
    def test_publish_validation(self) -> None:
        conn = open_conn()
        with pytest.raises(TypeError, match="topic must be a str"):
            conn.publish(b"t", (), now=0.0)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"wrap a single value as \(value,\)"):
            conn.publish("t", 5, now=0.0)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="args"):
            conn.publish("t", "abc", now=0.0)  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="qos must be 0, 1 or 2"):
            conn.publish("t", (), qos=3, now=0.0)
        with pytest.raises(TypeError, match="qos"):
            conn.publish("t", (), qos=True, now=0.0)
        with pytest.raises(TypeError, match="qos"):
            conn.publish("t", Payload.of(1), qos=1.0, now=0.0)  # type: ignore[call-overload]
        with pytest.raises(EncodeError):
            conn.publish("t", (object(),), now=0.0)
        with pytest.raises(EncodeError):
            conn.publish("t", (object(),), qos=1, now=0.0)
        assert conn.data_to_send() == [] and conn.unacked_count == 0

    def test_rpc_validation(self) -> None:
        conn = open_conn()
        with pytest.raises(TypeError, match="topic"):
            conn.rpc(1, (), now=0.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="target"):
            conn.rpc("f", (), target=b"x", now=0.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="args"):
            conn.rpc("f", {1}, now=0.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            conn.rpc("f", (), now=0.0, timeout=0)
        with pytest.raises(ValueError, match="timeout"):
            conn.rpc("f", (), now=0.0, timeout=math.inf)
        with pytest.raises(TypeError, match="timeout"):
            conn.rpc("f", (), now=0.0, timeout="1")  # type: ignore[arg-type]
        with pytest.raises(EncodeError):
            conn.rpc("f", (object(),), now=0.0)
        assert conn.pending_count == 0 and conn.data_to_send() == []

    def test_admin_helpers_validation(self) -> None:
        conn = make()
        with pytest.raises(TypeError, match="topic"):
            conn.subscribe(None, now=0.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="msg_from"):
            conn.subscribe("t", msg_from="now", now=0.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="msg_from"):
            conn.subscribe("t", msg_from=True, now=0.0)
        with pytest.raises(ValueError, match="msg_from"):
            conn.subscribe("t", msg_from=-1, now=0.0)
        with pytest.raises(ValueError, match="msg_from"):
            conn.subscribe("t", msg_from=math.nan, now=0.0)
        with pytest.raises(TypeError, match="on must be"):
            conn.reactive(1, now=0.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="topic"):
            conn.expose(1, now=0.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="topic"):
            conn.unsubscribe(1, now=0.0)  # type: ignore[arg-type]
        assert dict(conn.subscriptions) == {} and not conn.is_reactive

    def test_constructor_validation(self) -> None:
        with pytest.raises(TypeError, match="name"):
            ClientConnection(b"x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="anonymous"):
            ClientConnection("")
        with pytest.raises(TypeError, match="ClientConfig"):
            ClientConnection("x", {})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="id_factory"):
            ClientConnection("x", id_factory=8)  # type: ignore[arg-type]
        with pytest.raises(EncodeError):
            ClientConnection("x", meta={"k": object()})

    @pytest.mark.parametrize(("field", "value", "error"), [
        ("request_timeout", 0, ValueError), ("ack_timeout", -1.0, ValueError),
        ("ack_timeout", math.nan, ValueError), ("request_timeout", "1", TypeError),
        ("send_retries", -1, ValueError), ("send_retries", 1.0, TypeError),
        ("max_pending_requests", 0, ValueError), ("max_unacked_publishes", 0, ValueError),
        ("outbox_size", -1, ValueError), ("qos2_dedup_size", 0, ValueError),
        ("id_length", 0, ValueError), ("outbox_overflow", "block", ValueError),
        ("limits", None, TypeError),
    ])
    def test_config_validation(self, field: str, value: Any, error: type[Exception]) -> None:
        with pytest.raises(error, match=field):
            ClientConfig(**{field: value})

    def test_bad_id_factory(self) -> None:
        conn = ClientConnection("x", id_factory=lambda n: b"short")
        with pytest.raises(TypeError, match="id_factory"):
            conn.connect(0.0)
        assert state(conn) is ConnectionState.DISCONNECTED

    def test_id_collisions_are_avoided(self) -> None:
        ids = iter([ident(1), ident(2), ident(2), ident(2), ident(3)])
        conn = ClientConnection(None, id_factory=lambda n: next(ids))
        conn.connect(0.0)
        conn.rpc("a", (), now=0.0)
        conn.rpc("b", (), now=0.0)
        conn.publish("c", (), qos=1, now=0.0)
        assert [m.id for m in sent(conn)] == [ident(1), ident(2), ident(3)]
        stuck = ClientConnection(None, id_factory=lambda n: ident(1))
        stuck.connect(0.0)
        stuck.rpc("a", (), now=0.0)
        with pytest.raises(RuntimeError, match="random"):
            stuck.rpc("a", (), now=0.0)

    def test_connection_id_is_never_used(self) -> None:
        ids = iter([CONNECTION_ID, ident(7)])
        conn = ClientConnection(None, id_factory=lambda n: next(ids))
        conn.connect(0.0)
        conn.rpc("a", (), now=0.0)
        assert [m.id for m in sent(conn)] == [ident(7)]


# ---------------------------------------------------------------- protocol errors and bounds


class TestInputErrors:
    @pytest.mark.parametrize("frame", [
        b"", b"\x00", b"\xa0", b"\x83\x01", b"\x82\x05\x01", b"\x83\x0c\x40\x40",
        bytes.fromhex("8301676d79746f706963"),
    ])
    def test_malformed_input_raises_protocol_error(self, frame: bytes) -> None:
        conn = open_conn()
        with pytest.raises(ProtocolError):
            conn.receive_message(frame, 0.0)
        assert state(conn) is ConnectionState.OPEN

    def test_oversized_message(self) -> None:
        from rembus_proto import DecodeLimits

        conn = open_conn(limits=DecodeLimits(max_message_size=16))
        with pytest.raises(ProtocolError):
            conn.receive_message(Pub("t", Payload.of_args([b"x" * 32])).encode(), 0.0)

    def test_restore_failure_with_malformed_reason_keeps_request(self) -> None:
        conn = make()
        conn.subscribe("a", now=0.0)
        login(conn)
        [sub] = sent(conn)
        bad = Response(sub.id, 10, Payload(raw=b"\x82\x01")).encode()
        with pytest.raises(MalformedMessage):
            conn.receive_message(bad, 0.0)
        conn.receive_message(response(sub.id, 10, "no"), 0.0)
        assert conn.events() == [RestoreFailed("a", "subscribe", 10, "no")]

    def test_timer_heap_stays_bounded(self) -> None:
        conn = open_conn(request_timeout=1000.0)
        for i in range(5000):
            conn.rpc("f", (), now=float(i))
            [msg] = sent(conn)
            conn.receive_message(response(msg.id), float(i))
        assert len(conn._timers) <= 64 + 2
        conn.events()
        assert conn.next_deadline() is None


def test_publish_frames_match_the_message_classes() -> None:
    conn = ClientConnection(None, id_factory=fixed_id())
    conn.connect(0.0)
    args: list[Any] = [1, -2, 3.5, "s", b"b", None, True, [1, [2]], {"k": [1]}, 2**70]
    conn.publish("topic/é", args, now=0.0)
    conn.publish("topic/é", tuple(args), qos=1, now=0.0)
    assert conn.data_to_send() == [
        Pub("topic/é", Payload.of_args(args)).encode(),
        Pub("topic/é", Payload.of_args(args), ID8, 0x10).encode(),
    ]


def test_published_bytes_count_the_publications_waiting_to_be_sent() -> None:
    """A driver writes early once many bytes of publications wait (see published_bytes)."""
    conn = make(None)
    login(conn)
    conn.data_to_send()
    assert conn.published_bytes == 0
    conn.publish("t", [b"x" * 1000], now=0.0)
    conn.publish("t", Payload.of_args([b"y" * 2000]), now=0.0)
    conn.publish("t", [b"z" * 3000], qos=1, now=0.0)
    conn.rpc("m", (b"not a publication",), now=0.0)
    frames = conn.data_to_send()
    assert conn.published_bytes == 0
    assert sum(map(len, frames[:3])) > 6000 and len(frames) == 4
    conn.publish("t", [b"x" * 1000], now=0.0)
    conn.publish("t", Payload.of_args([b"y" * 2000]), now=0.0)
    conn.publish("t", [b"z" * 3000], qos=1, now=0.0)
    assert conn.published_bytes == sum(map(len, frames[:3]))


def test_seq_ids_helper() -> None:
    ids = SeqIds()
    assert ids(8) == ident(1) and ids(16) == ident(2, 16)


def test_events_are_values_equal_only_to_events_of_their_type() -> None:
    assert RequestTimedOut(1) == RequestTimedOut(1) and RequestTimedOut(1) != PublishAcked(1)
    assert RequestAborted(1, "x") != PublishFailed(1, "x") and PublishAcked(1) != (1,)
    assert len({RequestTimedOut(1), PublishAcked(1), RequestTimedOut(1)}) == 2
    with pytest.raises(AttributeError):
        PublishAcked(1).handle = 2  # type: ignore[misc]
