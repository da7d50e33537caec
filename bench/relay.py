"""The ceiling for broker benchmarks: a relay that does no Rembus work at all.

It accepts TCP connections, reads 4-byte big-endian length-prefixed frames
and writes each one, unparsed, to every other connection; writes are batched
per event-loop turn like the broker's. Run: python bench/relay.py --port 0
(prints the port it listens on).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import ClassVar


class Relay(asyncio.Protocol):
    peers: ClassVar[list[Relay]] = []
    dirty: ClassVar[set[Relay]] = set()
    scheduled: ClassVar[bool] = False

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        Relay.peers.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        Relay.peers.remove(self)
        Relay.dirty.discard(self)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos = 0
        end = len(buffer)
        while end - pos >= 4:
            size = int.from_bytes(buffer[pos : pos + 4], "big")
            if end - pos - 4 < size:
                break
            frame = bytes(buffer[pos : pos + 4 + size])
            pos += 4 + size
            for peer in Relay.peers:
                if peer is not self:
                    peer.out.append(frame)
                    Relay.dirty.add(peer)
        del buffer[:pos]
        if not Relay.scheduled:
            Relay.scheduled = True
            asyncio.get_running_loop().call_soon(Relay.flush)

    @staticmethod
    def flush() -> None:
        Relay.scheduled = False
        for peer in Relay.dirty:
            if peer.transport is not None:
                peer.transport.write(b"".join(peer.out))
            peer.out.clear()
        Relay.dirty.clear()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    opts = parser.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Relay, "127.0.0.1", opts.port)
    print(f"relay listening on {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
