"""The security setup through the ``rembus`` command: tenants, registration, restart,
login with the key, authenticated mode, TLS and unregistration, with a broker process."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

import rembus
import rembus.sync
from broker_process import WAIT, BrokerProcess, rembus_cli
from security_helpers import make_tls, secret_pem


def test_pin_lockout_options_reach_the_broker(tmp_path: Path) -> None:
    data = tmp_path / "broker"
    env = dict(os.environ, REMBUS_DIR=str(tmp_path / "components"))
    assert rembus_cli("broker", "tenant", "add", "acme", "4321", "--data-dir", str(data),
                      env=env).returncode == 0
    with BrokerProcess(data, "--pin-attempts", "1", "--pin-lockout", "600", env=env) as broker:
        wrong = rembus_cli("register", "dev.acme", "--pin", "0000", "--url", broker.url,
                           env=env)
        assert wrong.returncode == 1 and "wrong tenant/pin" in wrong.stderr
        locked = rembus_cli("register", "dev.acme", "--pin", "4321", "--url", broker.url,
                            env=env)
        assert locked.returncode == 1
        left = re.search(r"too many wrong PINs, try again in (\d+) s", locked.stderr)
        assert left is not None, locked.stderr
        # the 600 s lockout, less the time between the two commands (each bounded by WAIT);
        # the default lockout (60 s) could not say more than 60
        assert 600 - 2 * WAIT <= int(left.group(1)) <= 600
    assert not list((data / "keys").glob("dev.acme.*"))


def test_an_admin_stops_the_broker_with_shutdown(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "broker"
    env = dict(os.environ, REMBUS_DIR=str(tmp_path / "components"))
    monkeypatch.setenv("REMBUS_DIR", env["REMBUS_DIR"])
    assert rembus_cli("broker", "tenant", "add", ".", "1234", "--data-dir", str(data),
                      env=env).returncode == 0
    broker = BrokerProcess(data, env=env).start()
    try:
        assert rembus_cli("register", "boss", "--pin", "1234", "--url", broker.url,
                          env=env).returncode == 0
        assert rembus_cli("broker", "admin", "add", "boss", "--data-dir", str(data),
                          env=env).returncode == 0  # admins.json is read fresh
        with rembus.sync.component(f"{broker.url}/boss", reconnect=False) as boss:
            config = boss.admin("__config__", {"cmd": "broker_config"})
            assert config == {"exposers": {}, "subscribers": {}}
            assert boss.admin("__config__", {"cmd": "shutdown"}) is None
            assert broker.process is not None
            assert broker.process.wait_exit() == 0
    finally:
        broker.stop()


def test_register_restart_login_unregister(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data, components = tmp_path / "broker", tmp_path / "components"
    env = dict(os.environ, REMBUS_DIR=str(components))
    env.pop("HTTP_CA_BUNDLE", None)
    monkeypatch.setenv("REMBUS_DIR", str(components))
    monkeypatch.delenv("HTTP_CA_BUNDLE", raising=False)
    assert rembus_cli("broker", "tenant", "add", "acme", "4321", "--data-dir", str(data),
                      env=env).returncode == 0
    secret = components / "dev.acme" / ".secret"
    key_file = data / "keys" / "dev.acme.ecdsa.pem"

    with BrokerProcess(data, env=env) as broker:
        url = f"{broker.url}/dev.acme"
        wrong = rembus_cli("register", "dev.acme", "--pin", "0000", "--url", broker.url,
                           env=env)
        assert wrong.returncode == 1 and "wrong tenant/pin" in wrong.stderr
        done = rembus_cli("register", "dev.acme", "--pin", "4321", "--url", broker.url,
                          "--key-type", "ecdsa", env=env)
        assert done.returncode == 0, done.stderr
        assert secret.exists() and key_file.exists()
        again = rembus_cli("register", url, "--pin", "4321", env=env)
        assert again.returncode == 1 and "already registered" in again.stderr
        port = broker.port

    async def login(url: str, **options: object) -> None:
        rb = await rembus.component(url, reconnect=False, **options)
        assert await rb.rpc("rid") == "broker"
        await rb.close()

    tls = make_tls(tmp_path)
    with BrokerProcess(data, "--authenticated", "--tls-cert", str(tls.cert), "--tls-key",
                       str(tls.key), port=port, env=env) as broker:
        assert broker.url.startswith("wss://")
        url = f"{broker.url}/dev.acme"
        asyncio.run(login(url, ssl_context=tls.client_context()))  # the key survived
        good = secret.read_bytes()
        secret.write_bytes(secret_pem("ecdsa", 7))
        with pytest.raises(rembus.LoginFailed):
            asyncio.run(login(url, ssl_context=tls.client_context()))
        secret.write_bytes(good)

    with BrokerProcess(data, port=port, env=env) as broker:
        gone = rembus_cli("unregister", "dev.acme", "--url", broker.url, env=env)
        assert gone.returncode == 0, gone.stderr
        assert not secret.exists() and not key_file.exists()
        asyncio.run(login(f"{broker.url}/dev.acme"))  # free mode now
