"""ClientSession (WebSocket client + client machine) and the reconnect Backoff, sans IO."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client_helpers import make, response
from rembus_proto import (
    Backoff,
    ClientSession,
    Connected,
    ConnectionFailed,
    Disconnected,
    Identity,
    InvalidState,
    ProtocolError,
    RequestAborted,
    decode,
)
from rembus_proto.ws import ServerWebSocket
from rembus_proto.wsevents import Closed, Opened, WsMessage
from ws_helpers import feed, sent


def pair(name: str | None = "comp") -> tuple[ClientSession, ServerWebSocket]:
    """A session whose upgrade a server WebSocket answered."""
    session = ClientSession(make(name), "b:1", now=0.0, open_timeout=5.0)
    server = ServerWebSocket()
    events = feed(server, b"".join(session.data_to_send()))
    assert isinstance(events[0], Opened)
    session.receive_data(sent(server), 0.0)
    return session, server


def to_server(session: ClientSession, server: ServerWebSocket) -> list[object]:
    events = feed(server, b"".join(session.data_to_send()))
    return [decode(e.data) for e in events if isinstance(e, WsMessage)
            and isinstance(e.data, bytes)]


def test_login_through_the_upgrade() -> None:
    session, server = pair()
    assert session.is_open and session.next_deadline() == 10.0  # the login timeout
    [identity] = to_server(session, server)
    assert isinstance(identity, Identity) and identity.cid == "comp"
    server.send_message(response(identity.id))
    session.receive_data(sent(server), 1.0)
    assert session.events() == [Connected(None)]


def test_no_upgrade_answer_ends_the_session_at_the_deadline() -> None:
    session = ClientSession(make(), "b:1", now=2.0, open_timeout=0.5)
    session.data_to_send()
    assert session.next_deadline() == 2.5
    session.handle_timer(2.4)
    assert not session.ended
    session.handle_timer(2.5)
    assert session.ended and session.next_deadline() is None
    assert session.events() == [
        Disconnected("no WebSocket upgrade answer within 0.5 s", opened=False)]


def test_end_of_stream_before_the_answer_says_so() -> None:
    session = ClientSession(make(), "b:1", now=0.0, open_timeout=1.0)
    session.receive_data(b"", 0.1)
    [event] = session.events()
    assert event == Disconnected("the connection was closed without a WebSocket upgrade "
                                 "answer", opened=False)
    session.receive_data(b"more", 0.2)  # after a clean end input is ignored
    assert session.events() == []


def test_refused_upgrade_is_a_protocol_error_then_sticky() -> None:
    session = ClientSession(make(), "b:1", now=0.0, open_timeout=1.0)
    session.data_to_send()
    answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    with pytest.raises(ProtocolError):
        session.receive_data(answer, 0.1)
    [event] = session.events()
    assert isinstance(event, Disconnected) and "HTTP 404" in event.reason
    with pytest.raises(ConnectionFailed) as info:
        session.receive_data(b"anything", 0.2)
    assert isinstance(info.value, InvalidState)
    assert session.events() == [] and session.data_to_send() == []


def test_bad_message_fails_the_session_and_aborts_requests() -> None:
    session, server = pair(None)
    assert session.events() == [Connected(None)]
    handle = session.conn.rpc("m", (), now=0.0)
    to_server(session, server)
    server.send_message(b"\xa0")  # not a Rembus message
    with pytest.raises(ProtocolError):
        session.receive_data(sent(server), 1.0)
    events = session.events()
    assert events[0] == RequestAborted(handle, "connection lost")
    assert isinstance(events[1], Disconnected) and events[1].opened
    assert feed(server, b"".join(session.data_to_send())) == [
        Closed(1002, "bad message", clean=True)]
    with pytest.raises(ConnectionFailed):
        session.receive_data(b"", 2.0)


@given(st.floats(0.01, 5.0), st.floats(0.01, 60.0),
       st.lists(st.floats(0.0, 0.999), min_size=1, max_size=20))
def test_backoff_doubles_with_jitter_up_to_the_maximum(
        initial: float, maximum: float, draws: list[float]) -> None:
    it = iter([*draws, 0.999])
    backoff = Backoff(initial, maximum, lambda: next(it))
    step = initial
    for draw in draws:
        assert backoff.next_delay() == pytest.approx(step * (0.5 + 0.5 * draw))
        step = min(step * 2, max(maximum, initial))
    backoff.reset()
    assert backoff.next_delay() <= initial
