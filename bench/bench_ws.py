"""WebSocket framing throughput: rembus_proto.ws against wsproto and a raw copy.

Run: python bench/bench_ws.py [--seconds 0.2] [--rounds 5] [--no-numpy]

Frames per second for 60-byte and 1 MiB binary messages, in both directions
(client to server: masked; server to client: unmasked), encoding (send +
data_to_send) and decoding (receive_data over 64 KiB reads of a prepared
stream). "copy" is the floor: copying the bytes of one frame. Cases run
interleaved, round after round, keeping each one's best round because the
machine is noisy. Masking uses numpy when it is installed, unless --no-numpy.
Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage

from rembus_proto.ws import ClientWebSocket, ServerWebSocket, WSConfig, WsMessage
from rembus_proto.wsmask import use_numpy

READ_SIZE = 64 * 1024
SIZES = {"60 B": 60, "1 MiB": 1 << 20}
CONFIG = WSConfig(max_message_size=1 << 21)

# A step runs one batch and returns how many frames it handled.
Step = Callable[[], int]


def open_pair() -> tuple[ClientWebSocket, ServerWebSocket]:
    client = ClientWebSocket("bench", "/", CONFIG)
    server = ServerWebSocket(CONFIG)
    server.receive_data(b"".join(client.data_to_send()))
    client.receive_data(b"".join(server.data_to_send()))
    assert client.is_open and server.is_open
    return client, server


def batch_for(size: int) -> int:
    return max(1, 4_000_000 // (size + 16))


def stream(frames: list[bytes]) -> list[bytes]:
    data = b"".join(frames)
    return [data[i : i + READ_SIZE] for i in range(0, len(data), READ_SIZE)]


def copy_step(size: int) -> Step:
    frame = bytearray(os.urandom(size + 14))
    n = batch_for(size)

    def step() -> int:
        for _ in range(n):
            bytes(frame)
        return n

    return step


def ours_encode(size: int, from_client: bool) -> Step:
    client, server = open_pair()
    ws = client if from_client else server
    payload = os.urandom(size)
    n = batch_for(size)

    def step() -> int:
        send, flush = ws.send_message, ws.data_to_send
        for _ in range(n):
            send(payload)
            flush()
        return n

    return step


def wsproto_encode(size: int, from_client: bool) -> Step:
    conn = Connection(ConnectionType.CLIENT if from_client else ConnectionType.SERVER)
    event = BytesMessage(os.urandom(size))
    n = batch_for(size)

    def step() -> int:
        for _ in range(n):
            conn.send(event)
        return n

    return step


def frames_from(from_client: bool, size: int, n: int) -> list[bytes]:
    client, server = open_pair()
    ws = client if from_client else server
    payload = os.urandom(size)
    out = []
    for _ in range(n):
        ws.send_message(payload)
        out.extend(ws.data_to_send())
    return out


def ours_decode(size: int, from_client: bool) -> Step:
    n = batch_for(size)
    chunks = stream(frames_from(from_client, size, n))

    def step() -> int:
        client, server = open_pair()
        ws = server if from_client else client
        count = 0
        for chunk in chunks:
            ws.receive_data(chunk)
            for event in ws.events():
                if isinstance(event, WsMessage):
                    count += 1
        assert count == n
        return n

    return step


def wsproto_decode(size: int, from_client: bool) -> Step:
    n = batch_for(size)
    chunks = stream(frames_from(from_client, size, n))

    def step() -> int:
        conn = Connection(ConnectionType.SERVER if from_client else ConnectionType.CLIENT)
        count = 0
        for chunk in chunks:
            conn.receive_data(chunk)
            for event in conn.events():
                if isinstance(event, BytesMessage) and event.message_finished:
                    count += 1
        assert count == n
        return n

    return step


def rate(step: Step, seconds: float) -> float:
    frames = 0
    start = time.perf_counter()
    while True:
        frames += step()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return frames / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="time per case and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, best kept")
    parser.add_argument("--no-numpy", action="store_true", help="mask in pure Python")
    args = parser.parse_args()
    numpy = use_numpy(not args.no_numpy)

    cases: list[tuple[str, str, dict[str, Step]]] = []
    for label, size in SIZES.items():
        for from_client, direction in ((True, "client->server"), (False, "server->client")):
            for op in ("encode", "decode"):
                make_ours = ours_encode if op == "encode" else ours_decode
                make_wsproto = wsproto_encode if op == "encode" else wsproto_decode
                steps = {
                    "copy": copy_step(size),
                    "wsproto": make_wsproto(size, from_client),
                    "rembus": make_ours(size, from_client),
                }
                cases.append((label, f"{direction} {op}", steps))

    best: dict[tuple[int, str], float] = {}
    for _ in range(args.rounds):
        for index, (_, _, steps) in enumerate(cases):
            for name, step in steps.items():
                key = (index, name)
                best[key] = max(best.get(key, 0.0), rate(step, args.seconds))

    print(f"frames/s, best of {args.rounds} interleaved rounds of {args.seconds} s; "
          f"numpy masking {'on' if numpy else 'off'}")
    header = (
        f"{'size':<6} {'case':<22} {'copy':>12} {'wsproto':>12} {'rembus':>12} {'x wsproto':>10}"
    )
    print(header)
    print("-" * len(header))
    for index, (label, case, _) in enumerate(cases):
        copy, wsp, ours = (best[(index, name)] for name in ("copy", "wsproto", "rembus"))
        print(
            f"{label:<6} {case:<22} {copy:>12,.0f} {wsp:>12,.0f} {ours:>12,.0f} {ours / wsp:>9.1f}x"
        )


if __name__ == "__main__":
    main()
