"""The ``rembus broker`` process: restarts on the same data dir, exit codes, slow consumers."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import rembus.sync
import rembus_proto as rp
from broker_process import WAIT, BrokerProcess
from rembus.broker.server import Broker, BrokerConfig
from rembus.client.wire import Wire, WireClosed


def test_retroactive_messages_survive_a_broker_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        received: list[int] = []
        all_there = threading.Event()

        def reading(value: int) -> None:
            received.append(value)
            if len(received) == 5:
                all_there.set()

        sub = rembus.sync.component(f"{broker.url}/logger")
        sub.subscribe(reading, retroactive=True)
        sub.close()
        pub = rembus.sync.component(broker.url)
        for value in range(3):
            pub.publish("reading", value, qos=1)  # stored before the broker acknowledges
        pub.close()
        assert broker.stop() == 0  # a clean stop: exit code 0
        broker.start()  # same port, same data dir
        pub = rembus.sync.component(broker.url)
        for value in range(3, 5):
            pub.publish("reading", value, qos=1)
        pub.close()
        sub = rembus.sync.component(f"{broker.url}/logger")
        sub.subscribe(reading, retroactive=True)
        assert all_there.wait(WAIT)
        assert received == [0, 1, 2, 3, 4]
        sub.close()
    finally:
        if broker.process is not None:
            broker.stop()


def test_exit_code_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "rembus", "broker", "--port", str(port),
             "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot listen" in done.stderr


@pytest.mark.parametrize("bad", [["--port", "x"], ["--port", "65536"], ["--port", "-1"],
                                 ["--max-connections", "0"], ["--pin-lockout", "nan"],
                                 ["--log-level", "LOUD"], ["--unknown"]], ids=" ".join)
def test_usage_error_exit_code(bad: list[str], tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "rembus", "broker", "--data-dir",
                           str(tmp_path), *bad], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "error:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_consumer_that_does_not_read_is_disconnected_without_slowing_others() -> None:
    async def scenario() -> None:
        config = BrokerConfig(port=0, max_backlog=256 * 1024, write_high_water=64 * 1024,
                              write_low_water=16 * 1024)
        async with Broker(config) as broker:
            sub_id = bytes(range(8))
            stuck = await Wire.open("127.0.0.1", broker.port)
            healthy = await Wire.open("127.0.0.1", broker.port)
            for wire in (stuck, healthy):
                wire.send(rp.Admin(sub_id, "t", {"cmd": "subscribe", "msg_from": 0.0}).encode(),
                          rp.Admin(sub_id, "__config__", {"cmd": "reactive", "status": True})
                          .encode())
                await wire.recv()
                await wire.recv()
            stuck._stream._transport.pause_reading()  # type: ignore[attr-defined]
            pub = await Wire.open("127.0.0.1", broker.port)
            blob = rp.Pub("t", rp.Payload.of([b"x" * 60_000])).encode()
            for _ in range(200):  # 12 MB: far beyond what the stuck reader's buffers hold
                pub.send(blob)
                await pub.drain()
                assert await healthy.recv() == blob  # the healthy one keeps up
                if len(broker.router.connections) == 2:
                    break
            assert len(broker.router.connections) == 2  # the stuck one was dropped
            pub.send(blob)
            assert await healthy.recv() == blob  # the others carry on
            # reading again, it sees the end of its connection: its close does not wait
            stuck._stream._transport.resume_reading()  # type: ignore[attr-defined]
            with pytest.raises(WireClosed):
                for _ in range(1000):  # what was queued before the close frame, then its end
                    await stuck.recv()
            assert stuck.closed is not None and stuck.closed.code == 1008, stuck.closed
            for wire in (stuck, healthy, pub):
                await wire.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
