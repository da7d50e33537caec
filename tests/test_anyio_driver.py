"""``rembus.anyio`` beyond the behaviour suite: both backends, TLS, the ``async with`` block.

The behaviour suite runs the driver on trio; these tests cover what is its
own. Every test talks to a real broker on 127.0.0.1; ``WAIT`` only guards
against hangs.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import rembus.anyio
from behaviour_drivers import WAIT, in_process_broker
from rembus import RembusConnectionClosed
from security_helpers import make_tls

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["asyncio", "trio"]


def run(backend: str, scenario: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(scenario, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_and_async_handlers_on_each_backend(backend: str) -> None:
    async def scenario() -> None:
        arrived = anyio.Event()
        got: list[Any] = []

        def seen(value: Any) -> None:
            got.append(value)
            arrived.set()

        async def double(x: int) -> int:
            await anyio.sleep(0)
            return x * 2

        with in_process_broker() as url:
            async with rembus.anyio.component(f"{url}/anyio_server") as server, \
                    rembus.anyio.component(url) as client:
                await server.expose(double)
                await server.subscribe(seen, topic="seen")
                assert await client.rpc("double", 21) == 42
                await client.publish("seen", "value", qos=1)
                with anyio.fail_after(WAIT):
                    await arrived.wait()
        assert got == ["value"]

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_leaving_the_block_closes_the_component(backend: str) -> None:
    async def scenario() -> None:
        with in_process_broker() as url:
            async with rembus.anyio.component(url) as comp:
                assert comp.is_connected
            assert not comp.is_connected
            with pytest.raises(RembusConnectionClosed):
                await comp.rpc("anything")

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_connection_is_one_error_not_a_group(backend: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

    async def scenario() -> None:
        with pytest.raises(RembusConnectionClosed, match="connection refused"):
            async with rembus.anyio.component(f"ws://127.0.0.1:{port}/nobody"):
                raise AssertionError("connected to a closed port")

    run(backend, scenario)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls(backend: str, tmp_path: Path) -> None:
    tls = make_tls(tmp_path)

    async def scenario() -> None:
        with in_process_broker(ssl_context=tls.server_context()) as url:
            assert url.startswith("wss://")
            async with rembus.anyio.component(
                    f"{url}/anyio_tls", ssl_context=tls.client_context()) as comp:
                assert await comp.rpc("rid") == "broker"

    run(backend, scenario)
