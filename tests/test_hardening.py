"""Hostile or careless operators and peers against a real broker process.

Each test attacks a ``rembus broker`` subprocess on 127.0.0.1 and checks the
outcome: the attempt is refused, and the broker keeps serving everyone else.
"""

from __future__ import annotations

import signal
from pathlib import Path

import rembus.sync
from broker_process import BrokerProcess, rembus_cli


def _serves(broker: BrokerProcess) -> bool:
    with rembus.sync.component(broker.url, reconnect=False) as probe:
        return bool(probe.rpc("version"))


def test_two_brokers_cannot_share_a_data_dir(tmp_path: Path) -> None:
    """A second broker on a data dir in use exits 1 with a clear message."""
    data = tmp_path / "data"
    with BrokerProcess(data) as first:
        second = rembus_cli("broker", "--host", "127.0.0.1", "--port", "0",
                            "--data-dir", str(data))
        assert second.returncode == 1
        assert f"data dir {data} is in use by another broker" in second.stderr
        assert "Traceback" not in second.stderr
        assert _serves(first)


def test_a_killed_broker_leaves_no_stale_data_dir_lock(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    assert broker.process is not None
    broker.process.stop(signal.SIGKILL)
    broker.process = None
    with BrokerProcess(tmp_path / "data") as again:
        assert _serves(again)


def test_admin_grant_needs_a_registered_name_or_force(tmp_path: Path) -> None:
    """Granting admin to a free name would let whoever registers it first be admin."""
    data = str(tmp_path)
    refused = rembus_cli("broker", "admin", "add", "boss", "--data-dir", data)
    assert refused.returncode == 1
    assert "boss is not registered" in refused.stderr and "--force" in refused.stderr
    assert rembus_cli("broker", "admin", "list", "--data-dir", data).stdout == ""
    forced = rembus_cli("broker", "admin", "add", "boss", "--force", "--data-dir", data)
    assert forced.returncode == 0
    assert rembus_cli("broker", "admin", "list", "--data-dir", data).stdout == "boss\n"
