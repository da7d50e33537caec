"""The sans-IO WebSocket connections, driven against each other in memory."""

from __future__ import annotations

import base64
import random

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto import events as wse

from rembus_proto.errors import (
    ConnectionFailed,
    FrameError,
    HandshakeError,
    InvalidState,
    MessageTooLarge,
    ProtocolError,
)
from rembus_proto.ws import (
    ClientWebSocket,
    Closed,
    Event,
    HttpRequest,
    Opened,
    Pong,
    ServerWebSocket,
    WSConfig,
    WsMessage,
)
from tls_hello import client_hello
from ws_helpers import Side, feed, sent
from ws_oracle import build_frame

KEY = b"\x10\x20\x30\x40"


def pieces(data: bytes, rng: random.Random) -> list[bytes]:
    """Cut ``data`` into chunks of random sizes, as reads from a socket."""
    out = []
    while data:
        size = rng.choice((1, 2, 3, 7, 64, 1000, 70000))
        out.append(data[:size])
        data = data[size:]
    return out


def pump(src: Side, dst: Side, rng: random.Random | None = None) -> list[Event]:
    """Move what ``src`` queued into ``dst`` in random chunks; return dst's events."""
    rng = rng or random.Random(0)
    events: list[Event] = []
    for chunk in pieces(sent(src), rng):
        events.extend(feed(dst, chunk))
    return events


def open_pair(
    config: WSConfig | None = None, path: str = "/", seed: int = 0
) -> tuple[ClientWebSocket, ServerWebSocket]:
    rng = random.Random(seed)
    client = ClientWebSocket("broker.test:8338", path, config)
    server = ServerWebSocket(config)
    assert [type(e) for e in pump(client, server, rng)] == [Opened]
    assert [type(e) for e in pump(server, client, rng)] == [Opened]
    assert client.is_open and server.is_open
    return client, server


def upgrade_request(path: str = "/", overrides: dict[str, str | None] | None = None) -> bytes:
    headers: dict[str, str | None] = {
        "Host": "broker.test",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(b"k" * 16).decode(),
        "Sec-WebSocket-Version": "13",
    }
    headers.update(overrides or {})
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_response(data: bytes) -> tuple[h11.Response, bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    response = conn.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        else:
            break
    return response, body


# -- handshake ---------------------------------------------------------------


def test_handshake_reports_path_and_headers() -> None:
    client = ClientWebSocket("broker.test:8338", "/g0comp?x=1", extra_headers=[("X-Id", "7")])
    server = ServerWebSocket()
    assert not client.is_open and not client.closed
    (opened,) = pump(client, server)
    assert isinstance(opened, Opened)
    assert opened.path == "/g0comp?x=1"
    assert ("host", "broker.test:8338") in opened.headers
    assert ("x-id", "7") in opened.headers
    (answer,) = pump(server, client)
    assert isinstance(answer, Opened) and answer.path == "/g0comp?x=1"
    assert dict(answer.headers)["upgrade"] == "websocket"


def test_handshake_fed_one_byte_at_a_time() -> None:
    client = ClientWebSocket("h")
    server = ServerWebSocket()
    events: list[Event] = []
    for byte in sent(client):
        events.extend(feed(server, bytes([byte])))
    assert [type(e) for e in events] == [Opened]
    for byte in sent(server):
        events.extend(feed(client, bytes([byte])))
    assert [type(e) for e in events] == [Opened, Opened]


def test_frames_in_the_same_read_as_the_handshake() -> None:
    server = ServerWebSocket()
    data = upgrade_request() + build_frame(0x2, b"early", mask_key=KEY)
    events = feed(server, data)
    assert events[1:] == [WsMessage(b"early")]
    client = ClientWebSocket("h")
    key = sent(client).split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0]
    server = ServerWebSocket()
    feed(server, upgrade_request(overrides={"Sec-WebSocket-Key": key.decode()}))
    server.send_message("first")
    events = feed(client, sent(server))
    assert [type(e) for e in events] == [Opened, WsMessage]
    assert events[1] == WsMessage("first")


def test_permessage_deflate_offer_is_not_accepted() -> None:
    server = ServerWebSocket()
    offer = "permessage-deflate; client_max_window_bits"
    feed(server, upgrade_request(overrides={"Sec-WebSocket-Extensions": offer}))
    answer = sent(server)
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-extensions" not in answer.lower()
    with pytest.raises(FrameError):  # so a compressed frame is a protocol error
        feed(server, build_frame(0x2, b"x", rsv=4, mask_key=KEY))
    close = sent(server)
    assert close[0] == 0x88 and close[2:4] == (1002).to_bytes(2, "big")


def test_interoperates_with_wsproto_both_ways() -> None:
    peer = WSConnection(ConnectionType.CLIENT)
    server = ServerWebSocket()
    events = feed(server, peer.send(wse.Request(host="h", target="/w")))
    assert events == [Opened("/w", events[0].headers)]  # type: ignore[union-attr]
    server.send_message(b"\x01" * 70000)
    peer.receive_data(sent(server))
    got = list(peer.events())
    assert isinstance(got[0], wse.AcceptConnection)
    assert isinstance(got[1], wse.BytesMessage) and got[1].data == b"\x01" * 70000
    assert feed(server, peer.send(wse.TextMessage("hé"))) == [WsMessage("hé")]

    peer = WSConnection(ConnectionType.SERVER)
    client = ClientWebSocket("h", "/c")
    peer.receive_data(sent(client))
    request = next(peer.events())
    assert isinstance(request, wse.Request) and request.target == "/c"
    answer = peer.send(wse.AcceptConnection()) + peer.send(wse.BytesMessage(b"hi"))
    assert feed(client, answer)[1:] == [WsMessage(b"hi")]
    client.send_message("back")
    peer.receive_data(sent(client))
    assert next(peer.events()) == wse.TextMessage("back")


# -- messages ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_messages_both_ways_in_random_chunks(seed: int) -> None:
    rng = random.Random(seed)
    client, server = open_pair(seed=seed)
    sizes = (0, 1, 60, 125, 126, 65535, 65536, 200_000)
    messages: list[bytes | str] = [rng.randbytes(n) for n in sizes]
    messages += ["", 'json {"x": 1}', "\u2603" * 50_000]
    for message in messages:
        client.send_message(message)
        server.send_message(message)
    assert pump(client, server, rng) == [WsMessage(m) for m in messages]
    assert pump(server, client, rng) == [WsMessage(m) for m in messages]


def test_fragmented_messages_are_reassembled() -> None:
    _, server = open_pair()
    text = "caf\u00e9 \u2603".encode()
    stream = (
        build_frame(0x2, b"ab", fin=False, mask_key=KEY)
        + build_frame(0x0, b"", fin=False, mask_key=KEY)
        + build_frame(0x9, b"mid", mask_key=KEY)
        + build_frame(0x0, b"cd", mask_key=KEY)
        + build_frame(0x1, text[:4], fin=False, mask_key=KEY)
        + build_frame(0x0, text[4:], mask_key=KEY)
    )
    events: list[Event] = []
    for chunk in pieces(stream, random.Random(3)):
        events.extend(feed(server, chunk))
    assert events == [WsMessage(b"abcd"), WsMessage("caf\u00e9 \u2603")]
    assert sent(server) == b"\x8a\x03mid"  # the ping in between was answered


def test_size_limit_is_enforced_mid_message() -> None:
    client, server = open_pair(WSConfig(max_message_size=1000))
    feed(server, build_frame(0x2, b"a" * 400, fin=False, mask_key=KEY))
    feed(server, build_frame(0x0, b"b" * 400, fin=False, mask_key=KEY))
    third = build_frame(0x0, b"c" * 400, mask_key=KEY)
    with pytest.raises(MessageTooLarge) as info:
        feed(server, third[:8])  # its header alone is enough to refuse it
    assert info.value.size == 1200 and info.value.limit == 1000
    close = sent(server)
    assert close[:4] == b"\x88" + bytes([len(close) - 2]) + (1009).to_bytes(2, "big")
    assert server.closed and not server.is_open
    for more in (third[8:], b""):
        with pytest.raises(ConnectionFailed) as failed:
            feed(server, more)
        assert failed.value.cause is info.value
    assert sent(server) == b""
    assert [type(e) for e in feed(client, close)] == [Closed]


def test_size_limit_on_the_client_and_at_the_limit() -> None:
    client, server = open_pair(WSConfig(max_message_size=100))
    server.send_message(b"x" * 100)
    assert pump(server, client) == [WsMessage(b"x" * 100)]
    server.send_message("y" * 101)
    with pytest.raises(MessageTooLarge):
        pump(server, client)
    assert feed(server, sent(client)) == [Closed(1009, server_reason(), True)]


def server_reason() -> str:
    return "message of 101 bytes exceeds the limit of 100 bytes"


def test_ping_is_answered_with_a_pong() -> None:
    client, server = open_pair()
    client.send_ping(b"are you there")
    assert pump(client, server) == []
    assert pump(server, client) == [Pong(b"are you there")]
    server.send_ping()
    assert pump(server, client) == []
    assert pump(client, server) == [Pong(b"")]
    with pytest.raises(ValueError):
        client.send_ping(b"x" * 126)


# -- closing -----------------------------------------------------------------


@pytest.mark.parametrize("initiator", ["client", "server"])
def test_close_handshake(initiator: str) -> None:
    client, server = open_pair()
    first, second = (client, server) if initiator == "client" else (server, client)
    first.send_message(b"last words")
    first.close(4000, "overwritten")
    assert not first.is_open and not first.closed
    with pytest.raises(InvalidState):
        first.send_message(b"too late")
    second.send_message(b"in flight")  # crosses the close frame
    assert pump(first, second) == [WsMessage(b"last words"), Closed(4000, "overwritten", True)]
    assert second.closed
    with pytest.raises(InvalidState):
        second.send_message(b"after close")
    assert pump(second, first) == [WsMessage(b"in flight"), Closed(4000, "", True)]
    assert first.closed
    first.close()  # idempotent
    assert sent(first) == b"" and feed(first, b"") == []
    assert feed(second, b"") == []


def test_close_without_code_is_reported_as_1005() -> None:
    _, server = open_pair()
    assert feed(server, build_frame(0x8, b"", mask_key=KEY)) == [Closed(1005, "", True)]
    assert sent(server) == b"\x88\x00"


def test_close_arguments_are_checked_and_reason_cut() -> None:
    client, server = open_pair()
    for code in (999, 1005, 1006, 1015, 2000, 5000):
        with pytest.raises(ValueError):
            client.close(code)
    server.close(1001, "\u00e9" * 100)
    (closed,) = pump(server, client)
    assert isinstance(closed, Closed) and closed.reason == "\u00e9" * 61


@pytest.mark.parametrize("role", ["client", "server"])
def test_end_of_stream_without_close(role: str) -> None:
    client, server = open_pair()
    side = client if role == "client" else server
    assert feed(side, b"") == [Closed(1006, "", clean=False)]
    assert side.closed and feed(side, b"") == []
    assert feed(side, b"more") == []


def test_end_of_stream_while_closing_and_during_handshake() -> None:
    client, server = open_pair()
    client.close()
    assert feed(client, b"") == [Closed(1006, "", clean=False)]
    server = ServerWebSocket()
    assert feed(server, b"GET / HT") == []
    assert feed(server, b"") == [Closed(1006, "", clean=False)]
    client = ClientWebSocket("h")
    assert feed(client, b"") == [Closed(1006, "", clean=False)]


def test_close_before_open_just_ends() -> None:
    client = ClientWebSocket("h")
    sent(client)
    client.close()
    assert client.closed and sent(client) == b""


# -- plain HTTP --------------------------------------------------------------


def test_plain_http_get_is_answered_by_the_driver() -> None:
    server = ServerWebSocket()
    events = feed(server, b"GET /health HTTP/1.1\r\nHost: b\r\nAccept: */*\r\n\r\n")
    assert events == [HttpRequest("GET", "/health", (("host", "b"), ("accept", "*/*")))]
    assert not server.is_open and not server.closed
    with pytest.raises(InvalidState):
        server.send_message(b"no")
    server.send_http_response(200, [("Content-Type", "text/plain"), ("Content-Length", "9")], b"ok")
    assert server.closed
    response, body = parse_response(sent(server))
    assert response.status_code == 200 and body == b"ok"
    assert (b"connection", b"close") in list(response.headers)
    with pytest.raises(InvalidState):
        server.send_http_response(200, [], b"")


def test_plain_http_post_body_and_head() -> None:
    server = ServerWebSocket()
    request = b"POST /rpc HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\nhello"
    events: list[Event] = []
    for chunk in pieces(request, random.Random(1)):
        events.extend(feed(server, chunk))
    assert [(e.method, e.body) for e in events] == [("POST", b"hello")]  # type: ignore[union-attr]
    server.send_http_response(404, [], b"nope")
    assert parse_response(sent(server))[0].status_code == 404

    server = ServerWebSocket()
    feed(server, b"HEAD / HTTP/1.1\r\nHost: b\r\n\r\n")
    server.send_http_response(200, [], b"12345")
    data = sent(server)
    assert data.endswith(b"\r\n\r\n") and b"Content-Length: 5" in data


def test_invalid_http_response_arguments() -> None:
    server = ServerWebSocket()
    feed(server, b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
    with pytest.raises(ValueError):
        server.send_http_response(101, [], b"")
    with pytest.raises(ValueError):
        server.send_http_response(200, [("Bad Header", "x")], b"")
    server.send_http_response(200, [], b"")  # still possible after the refusals


def test_http_body_too_large() -> None:
    server = ServerWebSocket(WSConfig(max_http_body_size=10))
    with pytest.raises(MessageTooLarge):
        feed(server, b"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 11\r\n\r\n" + b"x" * 11)
    assert parse_response(sent(server))[0].status_code == 413
    assert server.closed


def test_http_body_declared_too_large_is_refused_before_it_arrives() -> None:
    server = ServerWebSocket(WSConfig(max_http_body_size=10))
    with pytest.raises(MessageTooLarge):
        feed(server, b"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 11\r\n\r\n")
    assert parse_response(sent(server))[0].status_code == 413


def test_chunked_http_body_is_bounded_too() -> None:
    server = ServerWebSocket(WSConfig(max_http_body_size=10))
    head = b"POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert feed(server, head + b"6\r\nabcdef\r\n") == []
    with pytest.raises(MessageTooLarge):
        feed(server, b"6\r\nghijkl\r\n")
    assert parse_response(sent(server))[0].status_code == 413


@pytest.mark.parametrize("one_read", [True, False])
def test_oversized_head_is_refused(one_read: bool) -> None:
    server = ServerWebSocket(WSConfig(max_http_head_size=1024))
    request = upgrade_request(overrides={"X-Filler": "f" * 2000})
    with pytest.raises(HandshakeError) as info:
        if one_read:
            feed(server, request)
        else:
            for byte in request:
                feed(server, bytes([byte]))
    assert info.value.status == 431
    assert parse_response(sent(server))[0].status_code == 431


def test_slowloris_head_is_bounded() -> None:
    server = ServerWebSocket(WSConfig(max_http_head_size=4096))
    feed(server, b"GET / HTTP/1.1\r\nHost: b\r\n")
    fed = 0
    with pytest.raises(HandshakeError):
        while fed < 10_000:
            feed(server, b"X-A: b\r\n")
            fed += 8
    assert fed < 4096


def test_head_just_under_the_limit_is_accepted() -> None:
    request = upgrade_request()
    server = ServerWebSocket(WSConfig(max_http_head_size=len(request)))
    assert [type(e) for e in feed(server, request)] == [Opened]
    server = ServerWebSocket(WSConfig(max_http_head_size=len(request) - 1))
    with pytest.raises(HandshakeError):
        feed(server, request)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade_request(overrides={"Sec-WebSocket-Key": None}), 400),
        (upgrade_request(overrides={"Sec-WebSocket-Key": "c2hvcnQ="}), 400),
        (upgrade_request(overrides={"Sec-WebSocket-Key": "!!!!!!!!!!!!!!!!!!!!!!=="}), 400),
        (upgrade_request(overrides={"Sec-WebSocket-Version": "8"}), 426),
        (upgrade_request(overrides={"Connection": "keep-alive"}), 400),
        (upgrade_request().replace(b"GET", b"POST", 1), 400),
        (upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), 400),  # TLS hello
    ],
)
def test_bad_upgrade_requests_get_an_http_error(request_bytes: bytes, status: int) -> None:
    server = ServerWebSocket()
    with pytest.raises(HandshakeError) as info:
        feed(server, request_bytes)
    assert info.value.status == status
    response, _ = parse_response(sent(server))
    assert response.status_code == status
    if status == 426:
        assert (b"sec-websocket-version", b"13") in list(response.headers)
    assert server.closed
    with pytest.raises(ConnectionFailed):
        feed(server, b"more")


# -- client handshake failures -----------------------------------------------


def test_non_101_answer_fails_the_client() -> None:
    client = ClientWebSocket("h")
    sent(client)
    with pytest.raises(HandshakeError) as info:
        feed(client, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status == 403 and "403" in str(info.value)
    assert client.closed and sent(client) == b""


def test_interim_answer_is_skipped() -> None:
    client = ClientWebSocket("h")
    server = ServerWebSocket()
    feed(server, sent(client))
    events = feed(client, b"HTTP/1.1 100 Continue\r\n\r\n" + sent(server))
    assert [type(e) for e in events] == [Opened]


@pytest.mark.parametrize(
    ("change", "extra"),
    [
        ("accept", b""),
        ("drop-upgrade", b""),
        ("none", b"Sec-WebSocket-Extensions: permessage-deflate\r\n"),
        ("none", b"Sec-WebSocket-Protocol: chat\r\n"),
    ],
)
def test_bad_101_answers_fail_the_client(change: str, extra: bytes) -> None:
    client = ClientWebSocket("h")
    server = ServerWebSocket()
    feed(server, sent(client))
    answer = sent(server)
    if change == "accept":
        answer = answer.replace(b"Sec-WebSocket-Accept: ", b"Sec-WebSocket-Accept: x")
    elif change == "drop-upgrade":
        answer = answer.replace(b"Upgrade: websocket\r\n", b"")
    answer = answer.replace(b"\r\n\r\n", b"\r\n" + extra + b"\r\n")
    with pytest.raises(HandshakeError):
        feed(client, answer)


def test_offered_subprotocol_may_be_chosen() -> None:
    client = ClientWebSocket("h", extra_headers=[("Sec-WebSocket-Protocol", "chat, rembus")])
    server = ServerWebSocket()
    feed(server, sent(client))
    answer = sent(server).replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: rembus\r\n\r\n"
    )
    assert [type(e) for e in feed(client, answer)] == [Opened]


def test_invalid_client_arguments() -> None:
    with pytest.raises(ValueError):
        ClientWebSocket("h", "/a path")
    with pytest.raises(ValueError):
        ClientWebSocket("h", extra_headers=[("Bad Name", "x")])
    with pytest.raises(ValueError):
        WSConfig(max_message_size=0)


def test_actions_in_the_wrong_state() -> None:
    client = ClientWebSocket("h")
    with pytest.raises(InvalidState):
        client.send_message(b"x")
    with pytest.raises(InvalidState):
        client.send_ping()
    with pytest.raises(InvalidState):
        ServerWebSocket().send_http_response(200, [], b"")


# -- protocol errors in the open state ---------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (build_frame(0x2, b"unmasked"), 1002),
        (build_frame(0x1, b"\xff", mask_key=KEY), 1007),
        (build_frame(0x0, b"x", mask_key=KEY), 1002),
        (build_frame(0x8, b"\x03", mask_key=KEY), 1002),
    ],
)
def test_frame_errors_queue_a_close_frame(frame: bytes, code: int) -> None:
    client, server = open_pair()
    with pytest.raises(FrameError) as info:
        feed(server, frame)
    assert info.value.close_code == code
    (closed,) = feed(client, sent(server))
    assert isinstance(closed, Closed) and closed.code == code and closed.clean
    assert server.closed
    with pytest.raises(ConnectionFailed):
        feed(server, b"\x00\x00")
    assert sent(server) == b""


def test_error_while_closing_sends_no_second_close() -> None:
    _, server = open_pair()
    server.close()
    sent(server)
    with pytest.raises(FrameError):
        feed(server, build_frame(0x3, b"", mask_key=KEY))
    assert sent(server) == b"" and server.closed


def test_bytes_like_input_and_output() -> None:
    client, server = open_pair()
    client.send_message(bytearray(b"ba"))
    client.send_message(memoryview(b"mv"))
    data = sent(client)
    assert feed(server, bytearray(data)) == [WsMessage(b"ba"), WsMessage(b"mv")]


def test_events_and_output_are_taken_once() -> None:
    client, server = open_pair()
    client.send_message(b"a")
    client.send_message("b")
    out = client.data_to_send()
    assert out and all(type(buffer) is bytes for buffer in out)
    assert client.data_to_send() == []
    server.receive_data(b"".join(out))
    assert server.events() == [WsMessage(b"a"), WsMessage("b")]
    assert server.events() == []


def test_events_before_an_error_in_the_same_read_are_not_queued() -> None:
    client, server = open_pair()
    client.send_message(b"ok")
    with pytest.raises(FrameError):
        server.receive_data(sent(client) + build_frame(0x2, b"unmasked"))
    assert server.events() == []


# -- properties: bad input only ever raises ProtocolError ---------------------


def valid_client_stream(messages: list[bytes | str]) -> tuple[bytes, bytes]:
    client = ClientWebSocket("h", "/p")
    server = ServerWebSocket()
    request = sent(client)
    feed(server, request)
    feed(client, sent(server))
    for message in messages:
        client.send_message(message)
    client.send_ping(b"p")
    client.close(1000, "done")
    return request, sent(client)


def feed_all(side: Side, chunks: list[bytes]) -> None:
    try:
        for chunk in chunks:
            feed(side, chunk)
        feed(side, b"")
    except ProtocolError:
        sent(side)
        assert side.closed
        with pytest.raises(ConnectionFailed):
            feed(side, b"x")


chunking = st.lists(st.integers(1, 50), min_size=1, max_size=8)


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    while i < len(data):
        size = sizes[len(out) % len(sizes)]
        out.append(data[i : i + size])
        i += size
    return out


@settings(max_examples=300)
@given(st.binary(max_size=400), chunking, st.booleans())
def test_arbitrary_bytes_only_raise_protocol_error(
    data: bytes, sizes: list[int], opened: bool
) -> None:
    server = ServerWebSocket(WSConfig(max_message_size=200, max_http_head_size=300))
    client = ClientWebSocket("h", config=WSConfig(max_message_size=200))
    if opened:
        feed(server, upgrade_request())
        sent(server)
        client, _ = open_pair(WSConfig(max_message_size=200))
    feed_all(server, chunked(data, sizes))
    feed_all(client, chunked(data, sizes))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.binary(max_size=300), st.text(max_size=80)), max_size=4),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("fid")),
        min_size=1,
        max_size=4,
    ),
    chunking,
)
def test_mutated_valid_streams_only_raise_protocol_error(
    messages: list[bytes | str], edits: list[tuple[int, int, str]], sizes: list[int]
) -> None:
    request, frames = valid_client_stream(messages)
    data = bytearray(request + frames)
    for at, value, how in edits:
        at %= len(data)
        if how == "f":
            data[at] ^= value or 1
        elif how == "i":
            data[at:at] = bytes([value])
        else:
            del data[at]
    server = ServerWebSocket(WSConfig(max_message_size=250, max_http_head_size=400))
    feed_all(server, chunked(bytes(data), sizes))


@pytest.mark.parametrize("sizes", [[0, 1, 125], [126, 65535, 65536], [5] * 50])
def test_send_messages_matches_send_message_one_by_one(sizes: list[int]) -> None:
    frames = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    for role in ("server", "client"):
        client, server = open_pair()
        batched = server if role == "server" else client
        batched.send_messages(frames)
        received = pump(batched, client if role == "server" else server)
        assert [e.data for e in received if isinstance(e, WsMessage)] == frames
    client, server = open_pair()
    for frame in frames:
        server.send_message(frame)
    one_by_one = sent(server)
    server.send_messages(frames)
    assert sent(server) == one_by_one


@pytest.mark.parametrize("chunk", [None, 1], ids=["whole", "first_byte_alone"])
def test_tls_handshake_on_a_plain_port_is_named(chunk: int | None) -> None:
    hello = client_hello()
    server = ServerWebSocket()
    with pytest.raises(HandshakeError, match=r"^TLS handshake on a plain ws:// port$"):
        feed(server, hello[:chunk])
    assert server.closed
