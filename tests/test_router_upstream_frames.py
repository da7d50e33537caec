"""Router regressions found by the interop suite, replayed with frames upstream peers send.

The hex frames are copied from ``tests/data/captured_frames.jsonl`` (PyPI
``rembus`` 0.1.0 with its 16-byte ids); the interop suite
(``tests/interop``) runs the same scenarios against the real packages.
"""

from __future__ import annotations

import rembus_proto as rp
from rembus_proto.broker import RouterConfig
from router_harness import Net, Peer

# rembus 0.1.0: IDENTITY "g0comp"; add_interest "mytopic" (retroactive false);
# add_impl "add"; reactive on; rpc add(1, 2)
G0_IDENTITY = bytes.fromhex("8300501f7af84b3ee74f2c8a9c03e840e8c38e666730636f6d70")
G0_ADD_INTEREST = bytes.fromhex(
    "840350057e32aa61aa42ada9f4773a862e55cb676d79746f706963a263636d646c6164645f696e746572"
    "6573746b726574726f616374697665f4")
G0_ADD_IMPL = bytes.fromhex(
    "8403503bac366c5d3e443080cf13059198132963616464a163636d64686164645f696d706c")
G0_REACTIVE = bytes.fromhex(
    "84035009cfcd87551b4f36b168828794841b5f6a5f5f636f6e6669675f5fa263636d64687265616374"
    "69766566737461747573f5")
G0_RPC_ADD = bytes.fromhex("850250754f532b0cf040ae93cac6834b84d03463616464f6820102")

#: websockets' default max_size, which rembus 0.1.0 does not change
G0_MAX_MESSAGE = 1 << 20


def g0_peer(net: Net, *frames: bytes) -> Peer:
    """A 0.1.0 component that sent ``frames`` (each answered OK)."""
    peer = net.connect(id_len=16)
    for frame in frames:
        peer.send(frame)
        reply = rp.decode(peer.inbox.pop())
        assert isinstance(reply, rp.Response) and reply.status == 0, reply
    return peer


def test_config_default_is_the_0_1_0_websocket_limit() -> None:
    assert RouterConfig().legacy_max_message == G0_MAX_MESSAGE


def test_publication_too_large_for_a_0_1_0_subscriber_is_not_sent_to_it() -> None:
    net = Net()
    g0 = g0_peer(net, G0_IDENTITY, G0_ADD_INTEREST, G0_REACTIVE)
    g8 = net.named("g8")
    g8.subscribe("mytopic")
    big = "x" * G0_MAX_MESSAGE
    publisher = net.connect()
    publisher.publish("mytopic", big)
    publisher.publish("mytopic", 1, "a")
    # it would close its connection on the large one (code 1009): it only misses that one
    assert g0.inbox == [bytes.fromhex("8301676d79746f70696382016161")]
    assert g8.pubs() == [("mytopic", (big,)), ("mytopic", (1, "a"))]


def test_request_too_large_for_a_0_1_0_exposer_is_refused() -> None:
    net = Net()
    g0 = g0_peer(net, G0_IDENTITY, G0_ADD_IMPL)
    caller = net.connect()
    big_id = caller.rpc("add", "x" * G0_MAX_MESSAGE)
    refused = caller.response(big_id)
    assert refused.status == rp.Status.GENERIC_ERROR
    assert "too large" in refused.data.value
    assert g0.inbox == []
    small_id = caller.rpc("add", 1, 2)
    request = rp.decode(g0.inbox.pop())
    assert isinstance(request, rp.Rpc) and len(request.id) == 16
    g0.send(rp.Response(request.id, 0, rp.Payload.of(3)))
    assert caller.response(small_id).data.value == 3


def test_response_too_large_for_a_0_1_0_caller_becomes_an_error() -> None:
    net = Net()
    exposer = net.named("calc")
    exposer.expose("add")
    g0 = net.connect(id_len=16)
    for answer in ("x" * G0_MAX_MESSAGE, 3):
        g0.send(G0_RPC_ADD)
        request = rp.decode(exposer.inbox.pop())
        assert isinstance(request, rp.Rpc)
        exposer.send(rp.Response(request.id, 0, rp.Payload.of(answer)))
        reply = g0.response(bytes.fromhex("754f532b0cf040ae93cac6834b84d034"))
        if answer == 3:
            assert (reply.status, reply.data.value) == (0, 3)
        else:
            assert reply.status == rp.Status.GENERIC_ERROR
            assert "too large" in reply.data.value
