"""QoS2 exactly-once across a broker killed with SIGKILL, on both hops.

The components here are raw WebSocket connections that send and read frames by
hand: a test then sees every frame the broker sends (no client-side dedup hides
a duplicate) and decides exactly when an ACK or ACK2 goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

import rembus.sync
import rembus_proto as rp
from broker_process import WAIT, BrokerProcess
from rembus.client.wire import Wire
from rembus.errors import RembusTimeout

TOPIC = "crash_qos2"


class Raw:
    """A component speaking raw frames; it never filters what the broker sends."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.ids = 0
        self.pending: list[Any] = []
        """Messages read while waiting for something else."""

    @classmethod
    async def open(cls, broker: BrokerProcess, name: str | None = None) -> Raw:
        raw = cls(await Wire.open("127.0.0.1", broker.port, timeout=WAIT))
        if name is not None:
            await raw.request(rp.Identity(raw.next_id(), name))
        return raw

    def next_id(self) -> bytes:
        self.ids += 1
        return b"req" + self.ids.to_bytes(5, "big")

    def send(self, message: Any) -> None:
        self.wire.send(message.encode())

    async def expect(self, kind: type, msg_id: bytes | None = None) -> Any:
        """The next message of ``kind`` (with ``msg_id``); others are kept in ``pending``."""
        while True:
            message = rp.decode(await asyncio.wait_for(self.wire.recv(), WAIT))
            if isinstance(message, kind) and msg_id in (None, message.id):
                return message
            self.pending.append(message)

    async def request(self, message: Any) -> None:
        """Send a request and wait for its OK."""
        self.send(message)
        reply = await self.expect(rp.Response, message.id)
        assert reply.status == 0, reply

    async def subscribe(self, *, reactive: bool) -> None:
        """A retroactive subscription to TOPIC; ``reactive``: deliveries start."""
        await self.request(rp.Admin(self.next_id(), TOPIC,
                                    {"cmd": "subscribe", "msg_from": math.inf}))
        if reactive:
            await self.request(rp.Admin(self.next_id(), "__config__",
                                        {"cmd": "reactive", "status": True}))

    async def publish(self, msg_id: bytes, value: int) -> None:
        """A QoS2 publication, up to the broker's ACK (no ACK2: see :meth:`release`)."""
        self.send(rp.Pub(TOPIC, rp.Payload.of([value]), msg_id, rp.QOS2))
        await self.expect(rp.Ack, msg_id)

    def release(self, msg_id: bytes) -> None:
        self.send(rp.Ack2(msg_id))

    async def values_until(self, last: int) -> list[int]:
        """Values of the publications received (each acknowledged) up to ``last``."""
        values: list[int] = []
        while not values or values[-1] != last:
            if self.pending:
                message = self.pending.pop(0)
            else:
                message = rp.decode(await asyncio.wait_for(self.wire.recv(), WAIT))
            if isinstance(message, rp.Pub):
                if message.id is not None:
                    self.send(rp.Ack(message.id))
                values.append(message.data.value[0])
        return values

    async def close(self) -> None:
        await self.wire.close()


def kill_and_restart(broker: BrokerProcess, sig: int = signal.SIGKILL) -> None:
    assert broker.process is not None
    broker.process.stop(sig)
    broker.process = None
    broker.start()  # same port, same data dir


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "stop"])
def test_a_qos2_resend_after_a_kill_is_not_stored_twice(tmp_path: Path, sig: int) -> None:
    """Publisher hop: the broker stored and acknowledged X, then died (or was
    stopped); the publisher, which never got to send ACK2, sends X again to
    the new broker."""

    async def scenario(broker: BrokerProcess) -> list[int]:
        sub = await Raw.open(broker, "crash_sub")
        await sub.subscribe(reactive=False)  # away: it is owed what is published now
        await sub.close()
        pub = await Raw.open(broker, "crash_pub")
        await pub.publish(b"qos2-x01", 1)
        kill_and_restart(broker, sig)
        await pub.close()  # its connection died with the broker
        pub = await Raw.open(broker, "crash_pub")
        await pub.publish(b"qos2-x01", 1)  # the same id: a resend
        pub.release(b"qos2-x01")
        await pub.publish(b"qos2-y02", 2)
        pub.release(b"qos2-y02")
        await pub.close()
        sub = await Raw.open(broker, "crash_sub")
        await sub.subscribe(reactive=True)
        values = await sub.values_until(2)
        await sub.close()
        return values

    with BrokerProcess(tmp_path / "data") as broker:
        assert asyncio.run(scenario(broker)) == [1, 2]


def test_a_qos2_delivery_released_by_ack2_is_not_replayed_after_a_kill(tmp_path: Path) -> None:
    """Subscriber hop: once the subscriber has ACK2 it forgets the id, so the
    delivery must be on disk before ACK2 leaves, or a replay duplicates it."""

    async def scenario(broker: BrokerProcess) -> list[int]:
        sub = await Raw.open(broker, "crash_sub")
        await sub.subscribe(reactive=True)
        pub = await Raw.open(broker)
        await pub.publish(b"qos2-x01", 1)
        pub.release(b"qos2-x01")
        delivery = await sub.expect(rp.Pub)
        assert delivery.id == b"qos2-x01"
        sub.send(rp.Ack(delivery.id))
        await sub.expect(rp.Ack2, delivery.id)
        kill_and_restart(broker)  # at once: the handler has run, the id is forgotten
        await sub.close()
        await pub.close()
        pub = await Raw.open(broker)
        await pub.publish(b"qos2-y02", 2)
        pub.release(b"qos2-y02")
        await pub.close()
        sub = await Raw.open(broker, "crash_sub")
        await sub.subscribe(reactive=True)
        values = await sub.values_until(2)
        await sub.close()
        return values

    with BrokerProcess(tmp_path / "data") as broker:
        assert asyncio.run(scenario(broker)) == [2]


@pytest.mark.parametrize("mode", ["live", "offline"])
def test_qos2_stream_through_kills_reaches_handlers_once(tmp_path: Path, mode: str) -> None:
    """Real components: a named publisher streams QoS2 messages while the
    broker is killed five times; each reaches the retroactive subscriber's handler
    exactly once."""
    count = 200
    received: list[int] = []
    lock = threading.Lock()
    all_there = threading.Event()

    def crash_reading(value: int) -> None:
        with lock:
            received.append(value)
            if value == count:
                all_there.set()

    with BrokerProcess(tmp_path / "data") as broker:
        sub = rembus.sync.component(f"{broker.url}/crash_sub")
        sub.subscribe(crash_reading, retroactive=True)
        if mode == "offline":
            sub.close()
        pub = rembus.sync.component(f"{broker.url}/crash_pub")
        try:
            for value in range(count + 1):
                if value and value % 40 == 0:  # five kills
                    kill_and_restart(broker)
                with contextlib.suppress(RembusTimeout):  # not withdrawn: resent later
                    pub.publish("crash_reading", value, qos=2)
            if mode == "offline":
                sub = rembus.sync.component(f"{broker.url}/crash_sub")
                sub.subscribe(crash_reading, retroactive=True)
            assert all_there.wait(WAIT)
        finally:
            pub.close()
            sub.close()
    with lock:
        assert sorted(received) == list(range(count + 1))  # none lost, none twice
