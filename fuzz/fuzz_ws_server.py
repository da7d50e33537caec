"""Coverage-guided fuzzing of the WebSocket server side (HTTP upgrade, plain HTTP, frames).

Run: python fuzz/fuzz_ws_server.py -max_total_time=20 [corpus-dir]

The input picks a configuration, whether a valid upgrade request comes
first, and then the bytes of the peer in chunks of fuzzed sizes; the harness
answers HTTP requests and echoes messages like a driver. Only
rembus_proto.ProtocolError may escape receive_data, and once it did the
connection must stay closed and refuse further input (ConnectionFailed).
"""

from __future__ import annotations

import sys

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("atheris is not installed: python -m pip install -e '.[fuzz]'")

with atheris.instrument_imports():
    import h11  # noqa: F401  (instrumented so that coverage guides the HTTP parsing too)

    from rembus_proto.errors import ConnectionFailed, ProtocolError
    from rembus_proto.ws import HttpRequest, ServerWebSocket, WSConfig, WsMessage

UPGRADE = (
    b"GET /fuzz HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def feed(ws: ServerWebSocket, data: bytes, echo: bool) -> None:
    ws.receive_data(data)
    for event in ws.events():
        if isinstance(event, HttpRequest):
            ws.send_http_response(200, [("Content-Type", "text/plain")], b"ok")
        elif isinstance(event, WsMessage) and echo and ws.is_open:
            ws.send_message(event.data)
    ws.data_to_send()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    flags = fdp.ConsumeIntInRange(0, 255)
    config = WSConfig(
        max_message_size=1 + (flags >> 3) * 37,
        max_http_head_size=1024,
        max_http_body_size=256,
    )
    ws = ServerWebSocket(config)
    try:
        if flags & 1:
            feed(ws, UPGRADE, echo=False)
        while fdp.remaining_bytes():
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 128))
            feed(ws, chunk, echo=bool(flags & 2))
            if flags & 4 and ws.is_open and fdp.ConsumeBool():
                ws.close(1000, "fuzz")
        feed(ws, b"", echo=False)
    except ProtocolError:
        ws.data_to_send()
        if not ws.closed:
            raise AssertionError("not closed after a ProtocolError") from None
        for more in (b"\x00", b""):
            try:
                ws.receive_data(more)
            except ConnectionFailed:
                continue
            raise AssertionError("input accepted after a ProtocolError") from None


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
