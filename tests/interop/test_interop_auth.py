"""Registered names and authenticated mode on ``rembus broker`` with upstream peers.

0.8.23 registers (REGISTER on an anonymous connection, tenant PIN) and logs in
with its key (challenge, 5-element ATTESTATION). 0.1.0 cannot register, but
logs in with a key it is given (RSA, 4-element ATTESTATION, 16-byte ids). In
authenticated mode the broker challenges every connection at once: only
0.8.23 configured with ``authenticated=True`` copes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from harness import CliBroker, Peer

pytestmark = pytest.mark.interop

Spawn = Callable[[str, str], Peer]
PIN = "11223344"


def secret(peer: Peer, name: str) -> str:
    """The private key 0.8.23 saved for ``name`` when it registered."""
    return (peer.home / "rembus" / name / ".secret").read_text()


def broker_with_tenant(workdir: Path, *options: str) -> CliBroker:
    CliBroker.command(workdir / "data", "tenant", "add", ".", PIN)
    return CliBroker(workdir, *options)


def test_registered_names_log_in_with_their_keys(tmp_path: Path, spawn: Spawn) -> None:
    new, old, client = (spawn("0.8.23", "new"), spawn("0.1.0", "old"),
                        spawn("0.8.23", "client"))
    with broker_with_tenant(tmp_path / "broker") as broker:
        assert new.fails("register", url=broker.url, name="calc", pin="wrong")[0] == 10
        new.call("register", url=broker.url, name="calc", pin=PIN)
        new.call("register", url=broker.url, name="legacy", pin=PIN)
        new.call("connect", url=f"{broker.url}/calc")  # challenge, then attestation
        new.call("expose", topic="add", kind="add")

        old.call("install_key", name="legacy", pem=secret(new, "legacy"))
        old.call("connect", url=f"{broker.url}/legacy")  # 0.1.0 signs the challenge too
        old.call("expose", topic="echo", kind="echo")

        client.call("connect", url=broker.url)
        assert client.call("rpc", topic="add", args=[1, 2]) == 3
        assert client.call("rpc", topic="echo", args=["x"]) == "x"
        assert old.call("rpc", topic="add", args=[3, 4]) == 7

        new.call("unregister")
        new.call("close")
        new.call("connect", url=f"{broker.url}/calc")  # free again: no challenge


def test_authenticated_mode(tmp_path: Path, spawn: Spawn) -> None:
    new, old, anonymous = (spawn("0.8.23", "new"), spawn("0.1.0", "old"),
                           spawn("0.8.23", "anonymous"))
    with broker_with_tenant(tmp_path / "broker") as open_broker:
        new.call("register", url=open_broker.url, name="calc", pin=PIN)
        new.call("register", url=open_broker.url, name="legacy", pin=PIN)
        data_dir = open_broker.data_dir
    old.call("install_key", name="legacy", pem=secret(new, "legacy"))

    with CliBroker(data_dir.parent, "--authenticated") as broker:
        new.call("connect", url=f"{broker.url}/calc", authenticated=True)
        new.call("expose", topic="add", kind="add")
        assert new.call("rpc", topic="version", args=[]).startswith("python_")
        # 0.1.0 ignores the unsolicited challenge, so it never attests: its login times out
        old.fails("connect", url=f"{broker.url}/legacy")
        # an anonymous component cannot authenticate: its first request is refused
        anonymous.call("connect", url=broker.url)
        assert anonymous.fails("rpc", topic="version", args=[])[0] == 10
