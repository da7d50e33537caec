"""Hostile or careless operators and peers against a real broker process.

Each test attacks a ``rembus broker`` subprocess on 127.0.0.1 and checks the
outcome: the attempt is refused, and the broker keeps serving everyone else.
"""

from __future__ import annotations

import select
import signal
import socket
from pathlib import Path

import rembus.sync
from broker_process import WAIT, BrokerProcess, rembus_cli
from raw_peer import frame, raw_connect, until_closed, upgraded, vm_rss
from rembus_proto.messages import Identity


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


def test_idle_connections_time_out_and_one_address_is_bounded(tmp_path: Path) -> None:
    """Item 5: upgrades that never speak, peers that never pong, too many from one address."""
    with BrokerProcess(tmp_path, "--identify-timeout", "0.5", "--keepalive", "0.5",
                       "--max-connections-per-address", "3") as broker:
        assert broker.process is not None
        idle = [upgraded(broker.port) for _ in range(3)]
        extra = raw_connect(broker.port)  # a fourth from 127.0.0.1: refused
        assert until_closed(extra) == b""
        broker.process.wait_for(r"refused: 3 connections open from 127\.0\.0\.1 "
                                r"\(--max-connections-per-address\)")
        for sock in idle:
            closing = until_closed(sock)
            assert closing.startswith(b"\x88"), closing  # a close frame, then the end
            assert b"--identify-timeout" in closing
            sock.close()
        extra.close()
        # Once identified, a peer that never answers the broker's pings is closed too.
        silent = upgraded(broker.port)
        silent.sendall(frame(0x2, Identity(bytes(16), "silent").encode()))
        closing = until_closed(silent)
        silent.close()
        assert b"--keepalive" in closing
        assert b"\x89" in closing  # it was pinged before
        broker.process.wait_for(r"'silent'.*no pong within 0\.5 s")
        assert _serves(broker)


BUDGET = 1024 * 1024
STALLED = 2.0
"""Seconds without the broker taking a byte after which it counts as not reading."""
MARGIN = 32 * 1024 * 1024


def _flood(sock: socket.socket, data: bytes, total: int) -> bool:
    """Send ``data`` repeatedly, ``total`` bytes at most; true once the broker stops taking
    it (it stopped reading this connection, or closed it)."""
    sock.setblocking(False)
    sent = 0
    pending = memoryview(b"")
    while sent < total:
        if not pending:
            pending = memoryview(data)
        _, writable, _ = select.select([], [sock], [], STALLED)
        if not writable:
            return True
        try:
            n = sock.send(pending)
        except (BrokenPipeError, ConnectionResetError):
            return True
        sent += n
        pending = pending[n:]
    return False


def test_ping_flood_stays_within_the_backlog_budget(tmp_path: Path) -> None:
    """Item 4: pings whose pongs are never read stop being read once the pongs fill the
    backlog budget; the broker's memory stays within it and others are served."""
    with BrokerProcess(tmp_path, "--max-backlog", str(BUDGET)) as broker:
        assert broker.process is not None
        assert _serves(broker)
        before = vm_rss(broker.process.proc.pid)
        attacker = upgraded(broker.port)
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pings = frame(0x9, b"p" * 125) * 512
        assert _flood(attacker, pings, 128 * 1024 * 1024)
        assert vm_rss(broker.process.proc.pid) - before < BUDGET + MARGIN
        assert _serves(broker)
        attacker.close()


def test_a_closed_consumer_that_never_reads_is_released(tmp_path: Path) -> None:
    """Item 7: a connection closed with output still queued (it never reads) is aborted
    after the grace period instead of holding its buffer forever."""
    with BrokerProcess(tmp_path, "--max-backlog", str(BUDGET), "--identify-timeout", "1",
                       "--close-grace", "0.5") as broker:
        assert broker.process is not None
        attacker = upgraded(broker.port)
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Pongs it never reads fill its queue; it never identifies, so the broker closes it.
        assert _flood(attacker, frame(0x9, b"p" * 125) * 512, 128 * 1024 * 1024)
        broker.process.wait_for(r"no message within 1 s")
        broker.process.wait_for(r"aborted, \d+ bytes still unread 0\.5 s after closing")
        attacker.setblocking(True)
        attacker.settimeout(WAIT)
        # What the broker still held (its close frame last) was thrown away, not sent.
        assert b"--identify-timeout" not in until_closed(attacker)
        attacker.close()
        assert _serves(broker)


def test_unfinished_messages_have_a_global_budget_and_a_timeout(tmp_path: Path) -> None:
    """Item 6: fragmented messages that never end cannot pile up, nor stay forever."""
    part = 3 * 1024 * 1024
    with BrokerProcess(tmp_path, "--max-partial-bytes", str(8 * 1024 * 1024),
                       "--fragment-timeout", "1") as broker:
        assert broker.process is not None
        before = vm_rss(broker.process.proc.pid)
        holders = [upgraded(broker.port) for _ in range(4)]
        for sock in holders[:2]:  # 6 MiB held: within the budget
            sock.sendall(frame(0x2, b"x" * part, fin=False))
        holders[2].sendall(frame(0x2, b"x" * part, fin=False))  # 9 MiB: over it
        closing = until_closed(holders[2])
        assert closing[:1] == b"\x88" and closing[2:4] == b"\x03\xf1", closing  # code 1009
        assert b"--max-partial-bytes" in closing
        assert _serves(broker)
        # The first two never finish their messages: closed once the timeout passes.
        for sock in holders[:2]:
            closing = until_closed(sock)
            assert closing.startswith(b"\x88"), closing
            assert b"--fragment-timeout" in closing
        # Their bytes are released: the budget takes a new unfinished message whole.
        holders[3].sendall(frame(0x2, b"x" * part, fin=False))
        holders[3].sendall(frame(0x0, b"y" * part, fin=False))
        holders[3].sendall(frame(0x0, b"z", fin=True))
        holders[3].sendall(frame(0x8, b"\x03\xe8"))
        closing = until_closed(holders[3])
        assert closing.startswith(b"\x88"), closing
        assert b"-partial-" not in closing and b"--fragment-timeout" not in closing
        assert vm_rss(broker.process.proc.pid) - before < 8 * 1024 * 1024 + MARGIN
        for sock in holders:
            sock.close()
