"""Keys, registration, authenticated mode, TLS and private topics end to end: an in-process
broker on 127.0.0.1 with its security files in a temp dir, our async client and raw frames."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import rembus
import rembus.sync
import rembus_proto as rp
from rembus.broker.server import Broker, BrokerConfig
from rembus.client.wire import Wire, WireClosed
from rembus.security import keys
from rembus.security.file_security import FileSecurity
from rembus.security.registration import register_sync
from rembus_proto import CONNECTION_ID, Status
from rembus_proto.broker import RouterConfig
from security_helpers import TLSFiles, make_tls, public_key, secret_pem, signature

_ids = itertools.count(1)


def new_id() -> bytes:
    return next(_ids).to_bytes(8, "little")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The broker's data dir (tenants "." and "acme", admin "boss"); components keep
    their keys in another temp dir ($REMBUS_DIR)."""
    monkeypatch.setenv("REMBUS_DIR", str(tmp_path / "components"))
    monkeypatch.delenv("HTTP_CA_BUNDLE", raising=False)
    data = tmp_path / "broker"
    data.mkdir()
    (data / "tenants.json").write_text(json.dumps({".": "1234", "acme": "4321"}))
    (data / "admins.json").write_text(json.dumps(["boss"]))
    return data


NAMES = {"boss": ("ecdsa", 0), "alice": ("rsa", 1), "bob": ("ecdsa", 2), "carol": ("rsa", 3),
         "owner": ("rsa", 4)}


def install(data: Path, name: str, pkcs8: bool = False) -> None:
    """Give ``name`` a session key on both sides, as a registration would."""
    kind, index = NAMES[name]
    key = public_key(kind, index)
    FileSecurity(data).save_key(name, key)
    secret = keys.secret_path(name)
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(secret_pem(kind, index, pkcs8))


@asynccontextmanager
async def broker(data: Path, *, authenticated: bool = False, challenge_timeout: float = 3.0,
                 overwrite: bool = False, **options: Any) -> AsyncIterator[Broker]:
    router = RouterConfig(authenticated=authenticated, challenge_timeout=challenge_timeout,
                          overwrite_connection=overwrite)
    config = BrokerConfig(host="127.0.0.1", port=0, router=router, **options)
    async with Broker(config, security=FileSecurity(data)) as running:
        yield running


async def wire(b: Broker, context: ssl.SSLContext | None = None) -> Wire:
    return await Wire.open("127.0.0.1", b.port, ssl_context=context)


async def reply_to(w: Wire, msg_id: bytes) -> rp.Response:
    while True:
        message = rp.decode(await w.recv())
        if isinstance(message, rp.Response) and message.id == msg_id:
            return message


async def request(w: Wire, message: Any) -> rp.Response:
    w.send(rp.encode(message))
    return await reply_to(w, message.id)


async def wire_login(b: Broker, name: str) -> Wire:
    """A raw connection logged in as ``name`` with its session key."""
    kind, index = NAMES[name]
    w = await wire(b)
    challenge = await request(w, rp.Identity(new_id(), name))
    assert challenge.status == Status.CHALLENGE, challenge
    sig = signature(challenge.data.value, name, kind, index)
    reply = await request(w, rp.Attestation(new_id(), name, sig))
    assert reply.status == 0, reply
    return w


async def closed_code(w: Wire) -> int:
    """Read until the broker closes; its close code."""
    with pytest.raises(WireClosed):
        while True:
            await w.recv()
    assert w.closed is not None
    return w.closed.code


class Healthy:
    """A named exposer, a subscriber and a caller that must keep working throughout."""

    def __init__(self, b: Broker) -> None:
        self.url = b.url
        self.received: asyncio.Queue[Any] = asyncio.Queue()

    async def start(self, **options: Any) -> Healthy:
        self.server = await rembus.component(f"{self.url}/healthy_server", **options)
        self.client = await rembus.component(f"{self.url}/healthy_client", **options)

        def double(x: int) -> int:
            return 2 * x

        async def ticks(n: int) -> None:
            await self.received.put(n)

        await self.server.expose(double)
        await self.server.subscribe(ticks)
        return self

    async def check(self, n: int) -> None:
        assert await self.client.rpc("double", n) == 2 * n
        await self.client.publish("ticks", n)
        assert await self.received.get() == n

    async def close(self) -> None:
        await self.client.close()
        await self.server.close()


# -- registration and login with keys ------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_register_login_unregister(data_dir: Path, kind: Any) -> None:
    async def scenario() -> None:
        async with broker(data_dir) as b:
            url = f"{b.url}/dev.acme"
            await rembus.register(url, "4321", key_type=kind)
            secret = keys.secret_path("dev.acme")
            assert secret.read_bytes().startswith(
                b"-----BEGIN RSA PRIVATE KEY" if kind == "rsa" else b"-----BEGIN EC PRIVATE KEY")
            assert oct(secret.stat().st_mode & 0o777) == "0o600"
            assert [p.name for p in (data_dir / "keys").iterdir()] == [f"dev.acme.{kind}.pem"]
            rb = await rembus.component(url)
            assert b.router.twins["dev.acme"].conn in b.router.guard.authenticated
            assert await rb.rpc("rid") == "broker"
            await rb.close()
            await rembus.unregister(url)
            assert not secret.exists() and list((data_dir / "keys").iterdir()) == []
            rb = await rembus.component(url)  # free mode again
            assert b.router.twins["dev.acme"].conn not in b.router.guard.authenticated
            await rb.close()

    run(scenario)


def test_register_refusals_keep_the_local_state(data_dir: Path) -> None:
    async def scenario() -> None:
        async with broker(data_dir) as b:
            with pytest.raises(rembus.RembusError) as wrong:
                await rembus.register(f"{b.url}/x.acme", "0000")
            assert (wrong.value.status, wrong.value.message) == (10, "wrong tenant/pin")
            with pytest.raises(rembus.RembusError) as disabled:
                await rembus.register(f"{b.url}/x.other", "4321")
            assert disabled.value.message == "tenant [other] not enabled"
            assert not keys.secret_path("x.acme").exists()
            assert not (data_dir / "keys").exists()
            install(data_dir, "alice")
            before = keys.secret_path("alice").read_bytes()
            with pytest.raises(rembus.NameAlreadyTaken):
                await rembus.register(f"{b.url}/alice", "1234", key_type="ecdsa")
            assert keys.secret_path("alice").read_bytes() == before
            with pytest.raises(rembus.RembusError, match="invalid operation"):
                await rembus.unregister(f"{b.url}/nobody")  # not registered: free login

    run(scenario)


def test_register_sync(data_dir: Path) -> None:
    async def scenario() -> None:
        async with broker(data_dir) as b:
            await asyncio.to_thread(register_sync, f"{b.url}/synced", "1234", key_type="ecdsa")
            rb = await rembus.component(f"{b.url}/synced")
            await rb.close()
            await asyncio.to_thread(rembus.sync.unregister, f"{b.url}/synced")
            assert not keys.secret_path("synced").exists()
            await asyncio.to_thread(rembus.sync.register, f"{b.url}/synced", "1234")
            assert keys.secret_path("synced").exists()
            with pytest.raises(RuntimeError, match=r"await rembus\.register"):
                register_sync(f"{b.url}/other", "1234")

    run(scenario)


@pytest.mark.parametrize("pkcs8", [False, True])
def test_login_with_a_secret_in_either_pem_format(data_dir: Path, pkcs8: bool) -> None:
    async def scenario() -> None:
        install(data_dir, "alice", pkcs8=pkcs8)
        async with broker(data_dir) as b:
            rb = await rembus.component(f"{b.url}/alice")
            assert rb.is_connected
            await rb.close()

    run(scenario)


def test_login_without_the_right_key_fails(data_dir: Path) -> None:
    async def scenario() -> None:
        install(data_dir, "alice")
        async with broker(data_dir) as b:
            keys.secret_path("alice").write_bytes(secret_pem("rsa", 3))  # carol's key
            with pytest.raises(rembus.LoginFailed, match="signature verification failed"):
                await rembus.component(f"{b.url}/alice", reconnect=False)
            keys.secret_path("alice").unlink()
            with pytest.raises(rembus.LoginFailed, match="does not exist"):
                await rembus.component(f"{b.url}/alice", reconnect=False)
            assert "alice" not in b.router.twins

    run(scenario)


# -- authenticated mode ------------------------------------------------------------------

def test_authenticated_mode(data_dir: Path) -> None:
    async def scenario() -> None:
        install(data_dir, "alice")
        async with broker(data_dir, authenticated=True, challenge_timeout=0.3) as b:
            alice = await rembus.component(f"{b.url}/alice")
            assert await alice.rpc("rid") == "broker"
            anonymous = await rembus.component(b.url, reconnect=False)
            with pytest.raises(rembus.RembusError):  # refused, or closed by the broker
                await anonymous.rpc("rid")
            await anonymous.close()
            await rembus.register(f"{b.url}/newcomer", "1234")  # skips the challenge
            newcomer = await rembus.component(f"{b.url}/newcomer")
            await newcomer.close()
            await rembus.unregister(f"{b.url}/newcomer")  # logs in through the same challenge
            assert not (data_dir / "keys" / "newcomer.rsa.pem").exists()
            # raw frames: a PUB before the login closes; so does silence
            eager = await wire(b)
            eager.send(rp.encode(rp.Pub("t", rp.Payload.of([1]))))
            assert await closed_code(eager) == 1008
            idle = await wire(b)
            first = rp.decode(await idle.recv())
            assert isinstance(first, rp.Response) and first.id == CONNECTION_ID
            assert first.status == Status.CHALLENGE
            assert await closed_code(idle) == 1008
            # a raw login with the unsolicited challenge
            w = await wire(b)
            first = rp.decode(await w.recv())
            assert isinstance(first, rp.Response)
            sig = signature(first.data.value, "alice", *NAMES["alice"])
            await alice.close()
            reply = await request(w, rp.Attestation(CONNECTION_ID, "alice", sig))
            assert reply.status == 0
            await w.close()

    run(scenario)


# -- hostile input -----------------------------------------------------------------------

def test_hostile_logins_leave_others_working(data_dir: Path) -> None:
    async def scenario() -> None:
        install(data_dir, "alice")
        install(data_dir, "owner")
        key_files = sorted(p.name for p in (data_dir / "keys").iterdir())
        async with broker(data_dir, overwrite=True, max_message_size=4096) as b:
            healthy = await Healthy(b).start()
            owner = await wire_login(b, "owner")
            await healthy.check(1)

            # wrong signature
            w = await wire(b)
            challenge = await request(w, rp.Identity(new_id(), "alice"))
            bad = await request(w, rp.Attestation(new_id(), "alice", b"\x30\x06" + b"\x00" * 6))
            assert (bad.status, bad.data.value) == (10, "signature verification failed")
            assert await closed_code(w) == 1008
            await healthy.check(2)

            # replay of a good attestation on a new connection
            w = await wire(b)
            challenge = await request(w, rp.Identity(new_id(), "alice"))
            captured = rp.Attestation(new_id(), "alice",
                                      signature(challenge.data.value, "alice", *NAMES["alice"]))
            assert (await request(w, captured)).status == 0
            await w.close()
            thief = await wire(b)
            await request(thief, rp.Identity(new_id(), "alice"))
            assert (await request(thief, captured)).status == 10
            assert await closed_code(thief) == 1008
            await healthy.check(3)

            # attestation for another name than the challenged one
            w = await wire(b)
            challenge = await request(w, rp.Identity(new_id(), "owner"))
            other = rp.Attestation(new_id(), "alice",
                                   signature(challenge.data.value, "alice", *NAMES["alice"]))
            reply = await request(w, other)
            assert reply.data.value == "attestation for another name than the challenged one"
            assert await closed_code(w) == 1008

            # take-over of a connected name (overwrite mode) without its key
            w = await wire(b)
            await request(w, rp.Identity(new_id(), "owner"))
            assert (await request(w, rp.Attestation(new_id(), "owner", b"x"))).status == 10
            assert await closed_code(w) == 1008
            assert (await request(owner, rp.Rpc(new_id(), "rid", rp.NO_ARGS))).status == 0
            await healthy.check(4)

            # malformed ATTESTATION / REGISTER frames and an oversize one
            for frame in (b"\x84\x0b\x48" + bytes(8) + b"\x61a\x61x",  # signature is text
                          b"\x86\x0a\x48" + bytes(8) + b"\x61a\x61p\x01\x01",
                          b"\x9f\x0b\xff"):
                w = await wire(b)
                w.send(frame)
                assert await closed_code(w) == 1002
            w = await wire(b)
            w.send(rp.encode(rp.Register(new_id(), "big", "1234", b"k" * 5000, 1)))
            assert await closed_code(w) == 1009
            await healthy.check(5)

            assert sorted(p.name for p in (data_dir / "keys").iterdir()) == key_files
            assert set(b.router.twins) == {"healthy_server", "healthy_client", "owner", "alice"}
            await owner.close()
            await healthy.close()

    run(scenario)


def test_commands_before_authentication_close_only_that_connection(data_dir: Path) -> None:
    async def scenario() -> None:
        install(data_dir, "alice")
        install(data_dir, "bob")
        async with broker(data_dir, authenticated=True) as b:
            alice = await rembus.component(f"{b.url}/alice")
            bob = await rembus.component(f"{b.url}/bob")
            got: asyncio.Queue[int] = asyncio.Queue()

            async def news(n: int) -> None:
                await got.put(n)

            await alice.subscribe(news)
            for message in (rp.Pub("news", rp.Payload.of([0])),
                            rp.Rpc(new_id(), "rid", rp.NO_ARGS),
                            rp.Admin(new_id(), "news", {"cmd": "subscribe"}),
                            rp.Identity(new_id(), "nobody")):
                w = await wire(b)
                await w.recv()  # the unsolicited challenge
                w.send(rp.encode(message))
                assert await closed_code(w) == 1008
                await bob.publish("news", 1)
                assert await got.get() == 1
            assert set(b.router.twins) == {"alice", "bob"}
            await alice.close()
            await bob.close()

    run(scenario)


def test_half_open_connections_and_slowloris(data_dir: Path) -> None:
    """2000 sockets that send nothing or half an HTTP upgrade are all cut, while a
    component keeps publishing and calling."""

    async def scenario() -> None:
        async with broker(data_dir, handshake_timeout=1.0) as b:
            healthy = await Healthy(b).start()
            sockets: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
            for batch in range(20):
                opened = await asyncio.gather(*(
                    asyncio.open_connection("127.0.0.1", b.port) for _ in range(100)))
                for index, (_, writer) in enumerate(opened):
                    if index % 2:
                        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: web")
                sockets.extend(opened)
                await healthy.check(batch)
            assert len(sockets) == 2000
            for reader, writer in sockets:
                assert await reader.read() == b""  # the broker hung up
                writer.close()
            await healthy.check(100)
            assert b.health()["connections"] == 2
            assert set(b.router.twins) == {"healthy_server", "healthy_client"}
            await healthy.close()

    run(scenario)


def test_unauthenticated_websockets_are_cut_in_authenticated_mode(data_dir: Path) -> None:
    async def scenario() -> None:
        install(data_dir, "alice")
        install(data_dir, "bob")
        async with broker(data_dir, authenticated=True, challenge_timeout=0.5) as b:
            alice = await rembus.component(f"{b.url}/alice")
            bob = await rembus.component(f"{b.url}/bob")

            def echo(x: int) -> int:
                return x

            await alice.expose(echo)
            idle = [await wire(b) for _ in range(200)]
            for n, w in enumerate(idle):
                assert await closed_code(w) == 1008
                if n % 50 == 0:
                    assert await bob.rpc("echo", n) == n
            assert await bob.rpc("echo", -1) == -1
            await alice.close()
            await bob.close()

    run(scenario)


# -- private topics ----------------------------------------------------------------------

async def admin(w: Wire, topic: str, command: dict[str, Any]) -> rp.Response:
    return await request(w, rp.Admin(new_id(), topic, command))


def test_private_topics_end_to_end(data_dir: Path) -> None:
    async def scenario() -> None:
        for name in ("boss", "alice", "bob", "carol", "owner"):
            install(data_dir, name)
        async with broker(data_dir) as b:
            boss = await wire_login(b, "boss")
            registered = await wire_login(b, "owner")  # registered, not an admin
            unauthorized = await admin(registered, "secret", {"cmd": "private_topic"})
            assert (unauthorized.status, unauthorized.data.value) == (10, "unauthorized")
            assert (await admin(boss, "secret", {"cmd": "private_topic"})).status == 0
            for name in ("alice", "bob"):
                reply = await admin(boss, "secret", {"cmd": "authorize", "cid": name})
                assert reply.status == 0
            alice = await rembus.component(f"{b.url}/alice")
            bob = await rembus.component(f"{b.url}/bob")
            carol = await rembus.component(f"{b.url}/carol")
            got: asyncio.Queue[str] = asyncio.Queue()

            async def secret(who: str) -> None:
                await got.put(who)

            def answer() -> str:
                return "42"

            await alice.subscribe(secret)
            await alice.expose(answer, topic="secret")
            for refused in (carol.subscribe(secret), carol.expose(answer, topic="secret"),
                            carol.rpc("secret"), carol.direct("alice", "secret")):
                with pytest.raises(rembus.RembusError) as error:
                    await refused
                assert (error.value.status, error.value.message) == (10, "unauthorized")
            await carol.publish("secret", "carol")
            assert await carol.rpc("rid") == "broker"  # the PUB before it was processed
            await bob.publish("secret", "bob")
            assert await got.get() == "bob" and got.empty()
            assert await bob.rpc("secret") == "42"
            config = await admin(boss, "__config__", {"cmd": "private_topics_config"})
            assert config.data.value == {"secret": ["alice", "bob"]}
            for c in (alice, bob, carol):
                await c.close()
            await boss.close()
            await registered.close()
        assert json.loads((data_dir / "topic_auth.json").read_text()) == {
            "secret": ["alice", "bob"]}
        async with broker(data_dir) as b:  # a restart keeps the topic private
            carol = await rembus.component(f"{b.url}/carol")
            with pytest.raises(rembus.RembusError, match="unauthorized"):
                await carol.rpc("secret")
            await carol.close()

    run(scenario)


# -- TLS ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def test_tls_with_the_ssl_context_option(data_dir: Path, tls: TLSFiles) -> None:
    async def scenario() -> None:
        install(data_dir, "alice")
        async with broker(data_dir, ssl_context=tls.server_context()) as b:
            assert b.url.startswith("wss://127.0.0.1:")
            context = tls.client_context()
            alice = await rembus.component(f"{b.url}/alice", ssl_context=context)
            assert await alice.rpc("rid") == "broker"
            await rembus.register(f"{b.url}/tls.acme", "4321", ssl_context=context)
            w = await wire(b, context)
            assert (await request(w, rp.Rpc(new_id(), "version", rp.NO_ARGS))).status == 0
            await w.close()
            await alice.close()

    run(scenario)


def test_tls_trusts_http_ca_bundle(data_dir: Path, tls: TLSFiles,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_CA_BUNDLE", str(tls.ca))

    async def scenario() -> None:
        async with broker(data_dir, ssl_context=tls.server_context()) as b:
            rb = await rembus.component(f"{b.url}/bundle")
            assert await rb.rpc("rid") == "broker"
            await rb.close()

    run(scenario)


def test_tls_trusts_the_ca_in_the_rembus_dir(data_dir: Path, tls: TLSFiles) -> None:
    ca_dir = Path(os.environ["REMBUS_DIR"]) / "ca"
    ca_dir.mkdir(parents=True)
    (ca_dir / "rembus-ca.crt").write_bytes(tls.ca.read_bytes())

    async def scenario() -> None:
        async with broker(data_dir, ssl_context=tls.server_context()) as b:
            rb = await rembus.component(f"{b.url}/ca_dir")
            assert await rb.rpc("rid") == "broker"  # a working TLS session
            await rb.close()
            (ca_dir / "rembus-ca.crt").unlink()  # the trust came from that file, verified:
            with pytest.raises(rembus.RembusConnectionClosed, match="CERTIFICATE_VERIFY_FAILED"):
                await rembus.component(f"{b.url}/ca_dir", reconnect=False)

    run(scenario)


def test_tls_refuses_an_untrusted_broker_and_plain_ws(data_dir: Path, tls: TLSFiles) -> None:
    async def scenario() -> None:
        async with broker(data_dir, ssl_context=tls.server_context(),
                          handshake_timeout=1.0) as b:
            healthy = await Healthy(b).start(ssl_context=tls.client_context())
            with pytest.raises(rembus.RembusConnectionClosed, match="CERTIFICATE_VERIFY_FAILED"):
                await rembus.component(f"{b.url}/nobody", reconnect=False)
            with pytest.raises(rembus.RembusConnectionClosed):
                await rembus.component(f"ws://127.0.0.1:{b.port}/plain", reconnect=False,
                                       timeout=5)
            # sockets that never start the TLS handshake are cut as well
            stalled = [await asyncio.open_connection("127.0.0.1", b.port) for _ in range(50)]
            await healthy.check(1)
            for reader, writer in stalled:
                assert await reader.read() == b""
                writer.close()
            await healthy.check(2)
            await healthy.close()

    run(scenario)
