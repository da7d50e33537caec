"""``rembus status`` against a broker process."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from broker_process import BrokerProcess, rembus_cli
from rembus.cli.status import render, status_request
from status_page import COMPONENT, METHOD, TOPIC, traffic


def test_rembus_status_prints_tables_or_json(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker, traffic(broker.url):
        tables = rembus_cli("status", "--url", f"http://127.0.0.1:{broker.port}")
        raw = rembus_cli("status", "--url", broker.url, "--json")  # ws:// works too
    assert tables.returncode == 0, tables.stderr
    lines = tables.stdout.splitlines()
    assert lines[0].startswith("broker broker (version ")
    assert {"components:", "topics:", "methods:"} <= set(lines)
    assert any(line.split()[:1] == [COMPONENT] for line in lines)
    assert any(line.split()[:3] == [TOPIC, "1", "3"] for line in lines)
    assert any(line.split()[:3] == [METHOD, COMPONENT, "1"] for line in lines)
    assert raw.returncode == 0, raw.stderr
    status = json.loads(raw.stdout)
    assert {c["name"] for c in status["components"]} == {COMPONENT, None}


def test_rembus_status_reports_an_unreachable_broker(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker:
        port = broker.port
    done = rembus_cli("status", "--url", f"http://127.0.0.1:{port}", "--timeout", "5")
    assert done.returncode == 1 and done.stderr.startswith("rembus status: ")


def test_status_request_and_render() -> None:
    request = status_request("ws://a:b%40c@127.0.0.1:8000/")
    assert request.full_url == "http://127.0.0.1:8000/status.json"
    assert request.get_header("Authorization") == "Basic " + base64.b64encode(
        b"a:b@c").decode()
    assert status_request("http://[::1]:9/status.json").full_url == "http://[::1]:9/status.json"
    with pytest.raises(ValueError):
        status_request("ftp://127.0.0.1")
    text = render({"broker": {"name": "b", "version": "1", "uptime": 3.0},
                   "totals": {"connections": 0, "messages_in": 0, "messages_out": 0},
                   "components": [], "topics": [], "methods": [], "backlog": [],
                   "omitted": {"topics": 2}})
    assert "  (none)" in text and text.endswith("not shown: 2 topics")


def test_rembus_status_gives_admin_credentials_from_the_url(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert rembus_cli("broker", "--data-dir", str(data), "tenant", "add", ".", "1234"
                      ).returncode == 0
    assert rembus_cli("broker", "--data-dir", str(data), "admin", "add", "boss", "--force"
                      ).returncode == 0
    with BrokerProcess(data, "--authenticated") as broker:
        cli = rembus_cli("status", "--url", f"http://boss:1234@127.0.0.1:{broker.port}")
        assert cli.returncode == 0 and "components:" in cli.stdout, cli.stderr
        refused = rembus_cli("status", "--url", f"http://127.0.0.1:{broker.port}")
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr
