"""Security shared by the brokers of a cluster: keys, tenants, admins, private topics.

Real broker processes on a real 3-node NATS cluster. The first broker's data
directory holds a tenant and an admin made with the offline ``rembus broker``
commands: joining the cluster shares them (the other brokers' directories are
empty). Changes made through one broker reach the others' caches a moment
later, so a test that needs one waits for it (a condition, never a sleep).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import rembus
import rembus.sync
from broker_process import rembus_cli, until
from nats_cluster import NatsCluster
from rembus.errors import NameAlreadyTaken, RembusError
from rembus.security.file_security import FileSecurity
from rembus_proto.broker import Router
from rembus_proto.store import MemoryStore
from security_helpers import public_key
from test_cluster_broker import Inbox, cluster_brokers, race

pytest.importorskip("nats")
from rembus.broker.cluster.config import ClusterConfig  # these need nats-py
from rembus.broker.cluster.security import ClusterSecurity, item_key
from rembus.broker.cluster.subjects import SubjectSpace
from test_cluster_names import jetstream, run

PIN = "1234"


@pytest.fixture
def components(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The components' key directory of this test (``REMBUS_DIR``)."""
    directory = tmp_path / "components"
    monkeypatch.setenv("REMBUS_DIR", str(directory))
    return directory


def seed(tmp_path: Path, *admins: str) -> None:
    """Tenant ``.`` and ``admins`` in the first broker's data dir, by the offline commands."""
    data = str(tmp_path / "broker0")
    assert rembus_cli("broker", "tenant", "add", ".", PIN, "--data-dir", data).returncode == 0
    for name in admins:
        assert rembus_cli("broker", "admin", "add", name, "--force",  # registered below
                          "--data-dir", data).returncode == 0


def login(url: str) -> rembus.sync.Component | None:
    """A logged-in component, ``None`` while its name is still released elsewhere."""
    try:
        return rembus.sync.component(url, reconnect=False)
    except RembusError as exc:
        assert "already connected" in str(exc)
        return None


def test_registered_through_one_broker_logs_in_through_another(
        nats_trio: NatsCluster, tmp_path: Path, components: Path) -> None:
    seed(tmp_path)
    with cluster_brokers(nats_trio, tmp_path, 2) as (b0, b1):
        # the tenant comes from b0's data dir; b1 has none of its own
        rembus.sync.register(f"{b1.url}/alice", PIN)
        with rembus.sync.component(f"{b0.url}/alice", reconnect=False) as alice:
            assert alice.rpc("rid") == "b0"  # logged in with the key registered through b1
        with pytest.raises(NameAlreadyTaken):
            rembus.sync.register(f"{b0.url}/alice", PIN)
        secret = components / "alice" / ".secret"
        good = secret.read_bytes()
        secret.unlink()
        with pytest.raises(RembusError):  # registered: no login without the key
            rembus.sync.component(f"{b0.url}/alice", reconnect=False)
        secret.write_bytes(good)
        rembus.sync.unregister(f"{b0.url}/alice")
        rembus.sync.register(f"{b1.url}/alice", PIN)  # the name is free again, everywhere
        with rembus.sync.component(f"{b0.url}/alice", reconnect=False) as alice:
            assert alice.rpc("rid") == "b0"


def test_two_brokers_racing_to_register_one_name(nats_trio: NatsCluster, tmp_path: Path,
                                                 components: Path) -> None:
    seed(tmp_path)
    with cluster_brokers(nats_trio, tmp_path, 2) as brokers:
        for round_ in range(3):
            name = f"racer-{round_}"

            def register(url: str, name: str = name) -> str:
                rembus.sync.register(f"{url}/{name}", PIN)
                return "registered"
            outcomes = race([b.url for b in brokers], register)
            assert sorted(map(type, outcomes), key=str) == sorted(
                [str, NameAlreadyTaken], key=str), outcomes
            for broker in brokers:  # the winner's key logs in everywhere
                with rembus.sync.component(f"{broker.url}/{name}", reconnect=False):
                    pass


def test_private_topics_and_admins_hold_on_every_broker(
        nats_trio: NatsCluster, tmp_path: Path, components: Path) -> None:
    seed(tmp_path, "boss")
    with cluster_brokers(nats_trio, tmp_path, 2) as (b0, b1):
        for name in ("boss", "alice", "bob", "mallory"):
            rembus.sync.register(f"{b0.url}/{name}", PIN)
        with rembus.sync.component(f"{b0.url}/boss", reconnect=False) as boss:
            for topic in ("secret", "vault"):
                boss.admin(topic, {"cmd": "private_topic"})
                for name in ("alice", "bob"):
                    boss.admin(topic, {"cmd": "authorize", "cid": name})
        # one name, one connection: boss logs in through b1 once gone from b0
        boss_b1 = until(lambda: login(f"{b1.url}/boss"), "boss logged in through b1")
        alice = rembus.sync.component(f"{b1.url}/alice", reconnect=False)
        bob = rembus.sync.component(f"{b0.url}/bob", reconnect=False)
        mallory = rembus.sync.component(f"{b1.url}/mallory", reconnect=False)
        mallory_b0 = rembus.sync.component(f"{b0.url}/mallory-0", reconnect=False)
        try:
            expected = {"secret": ["alice", "bob"], "vault": ["alice", "bob"]}
            # an admin granted through b0's data dir is an admin on b1 too; there it
            # sees the private topics set through b0 once b1's cache has them
            until(lambda: boss_b1.admin("__config__", {"cmd": "private_topics_config"})
                  == expected or None, "the private topics on the other broker")
            with pytest.raises(RembusError, match="unauthorized"):
                alice.admin("__config__", {"cmd": "private_topics_config"})
            with pytest.raises(RembusError):
                mallory.subscribe(Inbox(), topic="secret")
            got = Inbox()
            alice.subscribe(got, topic="secret")
            alice.reactive()
            got.probe(lambda: bob.publish("secret", "probe"), "probe")  # crosses brokers
            mallory.publish("secret", "forged")  # dropped: not authorized
            assert mallory.rpc("rid") == "b1"  # b1 has handled the forged publication
            bob.publish("secret", "genuine")
            assert got.next() == "genuine"

            def vault() -> str:
                return "opened"
            alice.expose(vault)

            def call() -> str | None:
                try:
                    return str(bob.rpc("vault"))
                except rembus.MethodNotFound:
                    return None  # alice's exposure has not reached b0's node yet
            assert until(call, "a call on a private topic across brokers") == "opened"
            with pytest.raises(RembusError, match="unauthorized"):
                mallory_b0.rpc("vault")
        finally:
            for component in (boss_b1, alice, bob, mallory, mallory_b0):
                component.close()


def test_authenticated_mode_across_brokers(nats_trio: NatsCluster, tmp_path: Path,
                                           components: Path) -> None:
    seed(tmp_path)
    with cluster_brokers(nats_trio, tmp_path, 2, "--authenticated") as brokers:
        rembus.sync.register(f"{brokers[0].url}/alice", PIN)
        for index, broker in enumerate(brokers):
            with pytest.raises(RembusError):
                stranger = rembus.sync.component(f"{broker.url}/stranger", reconnect=False)
                try:
                    stranger.rpc("rid")  # refused, or closed by the broker
                finally:
                    stranger.close()
            with rembus.sync.component(f"{broker.url}/alice", reconnect=False) as alice:
                assert alice.rpc("rid") == f"b{index}"


class _Broker:
    """What the shared security needs of a broker (no server)."""

    def __init__(self) -> None:
        self.router = Router(MemoryStore())
        self.cluster = None
        self.security = None

    def schedule_flush(self) -> None:
        pass


def test_a_data_dir_seeds_only_what_the_cluster_lacks(nats_node: NatsCluster,
                                                      tmp_path: Path) -> None:
    files = FileSecurity(tmp_path / "data")
    files.set_tenant(".", PIN)
    files.add_admin("boss")
    files.save_key("alice", public_key())
    files.save_private_topic("secret", ["alice", "bob"])
    config = ClusterConfig(tuple(nats_node.urls), "seeding")
    space = SubjectSpace(config.name)

    async def scenario() -> None:
        async with jetstream(*nats_node.urls) as js:
            first = await ClusterSecurity.open(js, space, _Broker(), config, files)
            try:
                assert first.tenant_pin(".") == PIN and first.is_admin("boss")
                assert first.public_key("alice") == files.public_key("alice")
                assert first.private_topics() == {"secret": {"alice", "bob"}}
                assert await first.seed(files) == 0  # everything is there already
                # unregistered through the cluster: a data dir does not bring it back
                assert await first.bucket.erase(item_key(("key", "alice")), None, None)
                # unauthorized through the cluster; the data dir's authorizations of a
                # topic the cluster knows are not the cluster's
                assert await first.bucket.erase(item_key(("auth", "secret", "alice")), None,
                                                None)
                files.save_private_topic("secret", ["alice", "bob", "carol"])
                files.set_tenant("acme", "4321")
                assert await first.seed(files) == 1  # the new tenant only
            finally:
                await first.stop()
            second = await ClusterSecurity.open(js, space, _Broker(), config, None)
            try:
                assert second.public_key("alice") is None
                assert second.private_topics() == {"secret": {"bob"}}
                assert second.tenant_pin("acme") == "4321" and second.is_admin("boss")
            finally:
                await second.stop()
    run(scenario)
