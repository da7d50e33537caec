"""Hostile frames against the Router: only ProtocolError, and others keep working."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rembus_proto as rp
from rembus_proto.broker import CLOSE_INTERNAL_ERROR, Connection
from router_harness import Net

VALID = [
    rp.Identity(b"\x01" * 8, "x").encode(),
    rp.Admin(b"\x02" * 8, "t", {"cmd": "subscribe", "msg_from": float("inf")}).encode(),
    rp.Admin(b"\x03" * 8, "__config__", {"cmd": "setup", "exposers": ["f"]}).encode(),
    rp.Pub("t", rp.Payload.of([1]), b"\x05" * 8, rp.QOS2).encode(),
    rp.Rpc(b"\x06" * 16, "f", rp.Payload.of([1]), "x").encode(),
    rp.Response(b"\x07" * 8, 0, rp.Payload.of(1)).encode(),
    rp.Ack(b"\x05" * 8).encode(),
    rp.Register(b"\x08" * 8, "x", "1234", b"key").encode(),
]


def mutate(frame: bytes, data: st.DataObject) -> bytes:
    raw = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw)))
        choice = data.draw(st.integers(0, 2))
        if choice == 0 and pos < len(raw):
            raw[pos] = data.draw(st.integers(0, 255))
        elif choice == 1:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=3))
        else:
            del raw[pos : pos + 2]
    return bytes(raw)


@given(st.data())
@settings(max_examples=500, deadline=None)
def test_hostile_frames_only_raise_protocol_error(data: st.DataObject) -> None:
    net = Net()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("t")
    hostile = net.connect(id_len=data.draw(st.sampled_from([8, 16])))
    for _ in range(data.draw(st.integers(1, 8))):
        if data.draw(st.booleans()):
            frame = data.draw(st.binary(max_size=64))
        else:
            frame = mutate(data.draw(st.sampled_from(VALID)), data)
        try:
            net.router.receive(hostile.conn, frame, net.now)
        except rp.ProtocolError:
            hostile.close()
            hostile = net.connect()
        net.pump()
    assert all(close.code != CLOSE_INTERNAL_ERROR for close in net.closes)
    # the bystanders are unaffected
    sub.inbox.clear()
    pub.publish("t", 42)
    assert ("t", (42,)) in sub.pubs()


def test_a_failure_handling_a_message_closes_only_that_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception becomes a 1011 close of the sender; the others go on."""
    net = Net()
    sub, pub = net.connect(), net.connect()
    sub.subscribe("t")
    hostile = net.connect()
    admin = net.router._admin

    def broken(conn: Connection, msg: rp.Admin) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(admin, "receive", broken)
    hostile.send(rp.Admin(hostile.new_id(), "t", {"cmd": "subscribe"}))
    net.pump()
    assert [(c.conn, c.code) for c in net.closes] == [(hostile.conn, CLOSE_INTERNAL_ERROR)]
    assert "RuntimeError: boom" in net.closes[0].reason
    sub.inbox.clear()
    pub.publish("t", 42)
    assert ("t", (42,)) in sub.pubs()
