"""What ``rembus broker`` logs: who connects and leaves, from where and why, as text or JSON."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path

import pytest

import rembus.sync
from broker_process import BrokerProcess
from rembus.client.wire import Wire, WireClosed
from tls_hello import client_hello

ADDRESS = r"127\.0\.0\.1:\d+"


def _startup_lines(broker: BrokerProcess) -> list[str]:
    assert broker.process is not None
    return broker.process.output


def test_broker_logs_each_component_with_its_name_address_and_reason(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker:
        assert broker.process is not None
        assert len(_startup_lines(broker)) == 1, _startup_lines(broker)  # one startup line
        assert re.match(r"rembus \S+: broker 'broker' serving ws://", _startup_lines(broker)[0])
        wait_for = broker.process.wait_for
        named = rembus.sync.component(f"{broker.url}/alice")
        wait_for(rf" INFO rembus\.broker: component 'alice' connected from {ADDRESS}$")
        anonymous = rembus.sync.component(broker.url)
        assert anonymous.rpc("rid") == "broker"
        wait_for(rf" INFO rembus\.broker: anonymous component connected from {ADDRESS}$")
        named.close()
        wait_for(rf" INFO rembus\.broker: component 'alice' from {ADDRESS} disconnected: "
                 r"closed by the component \(code 1000\)$")
        anonymous.close()
        wait_for(rf" INFO rembus\.broker: anonymous component from {ADDRESS} disconnected: "
                 r"closed by the component \(code 1000\)$")


def test_broker_logs_why_it_closes_a_connection(tmp_path: Path) -> None:
    async def send_garbage(port: int) -> None:
        wire = await Wire.open("127.0.0.1", port)
        wire.send(b"\x83\x01\x61")  # a PUB cut short
        with pytest.raises(WireClosed):
            await wire.recv()

    with BrokerProcess(tmp_path / "data") as broker:
        assert broker.process is not None
        asyncio.run(send_garbage(broker.port))
        broker.process.wait_for(rf" WARNING rembus\.broker: anonymous component from {ADDRESS} "
                                r"disconnected: closed by the broker: .+ \(code 1002\)$")


def test_tls_handshake_on_a_plain_port_is_logged_as_such(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker:
        assert broker.process is not None
        with socket.create_connection(("127.0.0.1", broker.port)) as sock:
            sock.sendall(client_hello())
            sock.settimeout(60)
            while sock.recv(4096):  # the broker answers and closes
                pass
        line = broker.process.wait_for(r"refused")
        assert re.search(rf" WARNING rembus\.broker: {ADDRESS} refused: "
                         r"TLS handshake on a plain ws:// port$", line), line
        assert "bytearray" not in "".join(broker.process.output)


def test_broker_logs_json_lines(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data", "--log-format", "json") as broker:
        assert broker.process is not None
        rembus.sync.component(f"{broker.url}/bob").close()
        lines = [broker.process.wait_for(r"^\{.*\"connected\""),
                 broker.process.wait_for(r"^\{.*\"disconnected\"")]
    connected, disconnected = (json.loads(line) for line in lines)
    assert connected["level"] == "INFO" and connected["component"] == "bob"
    assert connected["message"] == f"component 'bob' connected from {connected['address']}"
    assert re.fullmatch(ADDRESS, connected["address"])
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", connected["time"])
    assert disconnected["address"] == connected["address"]
    assert disconnected["reason"] == "closed by the component (code 1000)"
