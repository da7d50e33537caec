"""SlicedWriter against a transport that models the socket: order, bounds, resumption."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

import rembus
from rembus.broker.server import Broker, BrokerConfig
from rembus.writes import SLICE, SlicedWriter


class FakeTransport:
    """The flow-control contract of an asyncio write transport, over a socket that takes
    ``room`` bytes until :meth:`send` makes more room."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.buffer = bytearray()
        self.sent = bytearray()
        self.high = self.low = 0
        self.paused = False
        self.writer: SlicedWriter | None = None
        self.largest_buffer = 0
        self.writes = 0

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.high, self.low = high, low

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def writelines(self, chunks: list[bytes]) -> None:
        self.write(b"".join(chunks))

    def write(self, data: Any) -> None:
        self.writes += 1
        data = bytes(data)
        if not self.buffer:
            taken = min(self.room, len(data))
            self.sent += data[:taken]
            self.room -= taken
            data = data[taken:]
        self.buffer += data
        self.largest_buffer = max(self.largest_buffer, len(self.buffer))
        if not self.paused and len(self.buffer) > self.high:
            self.paused = True
            assert self.writer is not None
            self.writer.transport_paused()

    def send(self, room: int) -> None:
        """The peer read ``room`` bytes: the socket sends from the buffer."""
        self.room += room
        taken = min(self.room, len(self.buffer))
        self.sent += self.buffer[:taken]
        del self.buffer[:taken]
        self.room -= taken
        if self.paused and len(self.buffer) <= self.low:
            self.paused = False
            assert self.writer is not None
            self.writer.transport_resumed()


@settings(deadline=None)  # no timing in tests; rounds are bounded below
@given(room=st.integers(0, 3 * SLICE), step=st.integers(4096, 2 * SLICE),
       sizes=st.lists(st.integers(1, 3 * SLICE), min_size=1, max_size=4),
       low=st.sampled_from([0, 16 * 1024, SLICE // 4, SLICE, 4 * SLICE]))
def test_everything_is_sent_in_order_and_the_writer_resumes(
        room: int, step: int, sizes: list[int], low: int) -> None:
    transport = FakeTransport(room)
    events: list[str] = []
    writer = SlicedWriter(transport, high=max(low, 4 * low, SLICE), low=low,  # type: ignore[arg-type]
                          pause=lambda: events.append("pause"),
                          resume=lambda: events.append("resume"))
    transport.writer = writer
    payload = b"".join(bytes([i % 251]) * n for i, n in enumerate(sizes))
    at = 0
    for n in sizes:
        writer.write(payload[at : at + n])
        at += n
    for _ in range(len(payload) // step + 2):  # bounded: each round frees ``step`` bytes
        transport.send(step)
    assert bytes(transport.sent) == payload
    assert writer.size == 0
    assert not writer.paused  # a pause is always followed by a resume
    assert events.count("pause") == events.count("resume")
    assert transport.largest_buffer <= SLICE + max(sizes)  # the transport holds a slice or so


@settings(deadline=None)
@given(room=st.integers(0, 2 * SLICE),
       sizes=st.lists(st.one_of(st.integers(1, 2048), st.integers(SLICE, 2 * SLICE)),
                      min_size=2, max_size=600))
@example(room=0, sizes=[1000] * 500)  # a turn of small deliveries to a socket that fell behind
@example(room=4096, sizes=[100] * 300 + [SLICE] + [100] * 300)
def test_many_frames_cost_a_write_per_slice_not_per_frame(room: int, sizes: list[int]) -> None:
    """A turn's frames for one connection (``writelines``): small ones are joined into
    pieces of about a slice, so a socket that fell behind is not given one write per frame."""
    transport = FakeTransport(room)
    writer = SlicedWriter(transport, high=64 * SLICE, low=SLICE)  # type: ignore[arg-type]
    transport.writer = writer
    frames = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    writer.writelines(frames)
    payload = b"".join(frames)
    for _ in range(len(payload) // SLICE + 2):  # bounded: each round frees a slice
        transport.send(SLICE)
    assert bytes(transport.sent) == payload
    large = sum(1 for n in sizes if n >= SLICE)
    assert transport.writes <= 2 * (len(payload) // SLICE) + 2 * large + 2, transport.writes


def test_a_publisher_that_never_yields_writes_large_messages_as_it_goes() -> None:
    """The asyncio driver batches the writes of a publisher that does not yield (64
    messages), but no more than about a slice of bytes: 64 large messages would sit
    in memory, encoded, before the first byte left."""
    async def scenario() -> int:
        async with Broker(BrokerConfig(port=0)) as broker:
            rb = await rembus.component(f"ws://127.0.0.1:{broker.port}")
            blob = b"x" * (512 * 1024)
            highest = 0
            for _ in range(40):
                await rb.publish("big", blob)
                highest = max(highest, rb.conn.published_bytes)
            await rb.close()
            return highest

    assert asyncio.run(scenario()) < SLICE + 512 * 1024 + 100
