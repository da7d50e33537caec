"""Components given several brokers (a cluster): URL lists, and trying the next broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import rembus.anyio
import rembus.blocking
import rembus.sync
from broker_process import BrokerProcess, until
from nats_cluster import free_ports
from rembus.client import aio
from rembus.client.url import ComponentURL, parse
from rembus.errors import RembusConnectionClosed


def test_a_list_of_urls_is_one_component_at_several_brokers() -> None:
    url = parse(["ws://h1:8000/comp", "wss://h2:9000/comp", "ws://h3/comp"])
    assert (url.endpoint, url.name) == ("ws://h1:8000", "comp")
    assert url.alternates == (("wss", "h2", 9000), ("ws", "h3", 80))
    seen = [url.endpoint]
    for _ in range(3):
        url = url.next()
        seen.append(url.endpoint)
        assert url.name == "comp"
    assert seen == ["ws://h1:8000", "wss://h2:9000", "ws://h3:80", "ws://h1:8000"]


def test_a_single_url_has_no_next() -> None:
    url = parse("ws://h1:8000/comp")
    assert url.next() is url
    assert url == ComponentURL("ws", "h1", 8000, "comp")


def test_the_base_url_may_list_several_brokers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMBUS_BASE_URL", "ws://h1:8000, h2:8001")
    named = parse("comp")
    assert (named.endpoint, named.name, named.alternates) == ("ws://h1:8000", "comp",
                                                              (("ws", "h2", 8001),))
    assert parse(None).next().endpoint == "ws://h2:8001"


@pytest.mark.parametrize("urls", [[], ["ws://h1:8000/a", "ws://h2:8000/b"],
                                  ["ws://h1:8000/a", "ws://h2:8000"]])
def test_a_list_must_name_one_component(urls: list[str]) -> None:
    with pytest.raises(ValueError):
        parse(urls)


def test_a_list_of_something_else_is_refused() -> None:
    with pytest.raises(TypeError, match="a str, a list of str or None"):
        parse([b"ws://h1:8000"])  # type: ignore[list-item]


@pytest.fixture
def dead_url() -> str:
    """A loopback address nobody listens on (the port was free a moment ago)."""
    return f"ws://127.0.0.1:{free_ports(1)[0]}"


def test_every_driver_starts_on_the_next_broker(broker_process: BrokerProcess,
                                                dead_url: str) -> None:
    urls = [f"{dead_url}/failover", f"{broker_process.url}/failover"]
    with rembus.sync.component(urls) as sync_comp:
        assert sync_comp.url.endpoint == broker_process.url
        assert sync_comp.rpc("rid") == "broker"
    blocking_comp = rembus.blocking.component(urls)
    try:
        assert blocking_comp.url.endpoint == broker_process.url
        assert blocking_comp.rpc("rid") == "broker"
    finally:
        blocking_comp.close()

    async def with_aio() -> None:
        comp = await aio.component(urls)
        try:
            assert comp.url.endpoint == broker_process.url
            assert await comp.rpc("rid") == "broker"
        finally:
            await comp.close()
    asyncio.run(with_aio())

    async def with_anyio() -> None:
        async with rembus.anyio.component(urls) as comp:
            assert comp.url.endpoint == broker_process.url
            assert await comp.rpc("rid") == "broker"
    asyncio.run(with_anyio())


def test_no_broker_reachable_is_the_usual_error(dead_url: str, tmp_path: Path) -> None:
    with pytest.raises(RembusConnectionClosed):
        rembus.blocking.component([f"{dead_url}/a", f"{dead_url}/a"])
    with pytest.raises(RembusConnectionClosed):
        rembus.sync.component([f"{dead_url}/a", f"{dead_url}/a"])


def test_blocking_component_reconnects_to_the_next_broker(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "one", "--name", "one") as one, \
            BrokerProcess(tmp_path / "two", "--name", "two") as two:
        comp = rembus.blocking.component([one.url, two.url], reconnect_initial=0.01,
                                         reconnect_max=0.05)
        try:
            assert comp.rpc("rid") == "one"
            one.stop()

            def answer() -> str | None:
                try:
                    return str(comp.rpc("rid"))
                except RembusConnectionClosed:
                    comp.process(0.05)  # runs its reconnect timer
                    return None
            assert until(answer, "the second broker answers") == "two"
        finally:
            comp.close()
