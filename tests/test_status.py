"""``GET /status`` and ``/status.json`` of a broker process, and the page rendered by
headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import rembus.sync
from broker_process import BrokerProcess, rembus_cli
from status_page import COMPONENT, METHOD, TOPIC, chromium, chromium_path, traffic


def get(port: int, path: str, auth: tuple[str, str] | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of ``GET path`` (with HTTP Basic ``auth``)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth is not None:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, dict(reply.headers.items()), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def status_json(port: int, auth: tuple[str, str] | None = None) -> Any:
    code, headers, body = get(port, "/status.json", auth)
    assert code == 200 and headers["content-type"] == "application/json", (code, body)
    return json.loads(body)


def by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


def test_status_json_shows_components_topics_methods_and_backlog(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker:
        assert broker.process is not None
        empty = status_json(broker.port)
        assert empty["components"] == [] and empty["topics"] == [] and empty["methods"] == []
        with traffic(broker.url):
            seen = status_json(broker.port)
        components = by(seen["components"], "address")
        assert len(components) == 2
        named = [c for c in components.values() if c["name"] == COMPONENT]
        anonymous = [c for c in components.values() if c["name"] is None]
        assert len(named) == 1 and len(anonymous) == 1
        assert anonymous[0]["messages_in"] >= 4 and named[0]["messages_out"] >= 4
        assert named[0]["address"].startswith("127.0.0.1:")
        assert by(seen["topics"], "topic")[TOPIC] | {"rate": 0} == {
            "topic": TOPIC, "subscribers": 1, "publications": 3, "rate": 0}
        method = by(seen["methods"], "method")[METHOD]
        assert method["exposers"] == [COMPONENT] and method["calls"] == 1
        assert method["latency_ms"] is not None and method["latency_ms"] >= 0
        assert seen["totals"]["connections"] == 2 and seen["broker"]["name"] == "broker"
        assert seen["backlog"] == []

        broker.process.wait_for(rf"component '{COMPONENT}' from .* disconnected")
        with rembus.sync.component(broker.url) as publisher:
            publisher.publish(TOPIC, 22.0)
            assert publisher.rpc("rid") == "broker"
            after = status_json(broker.port)
        assert after["backlog"] == [{"component": COMPONENT, "messages": 1}]
        assert by(after["topics"], "topic")[TOPIC]["subscribers"] == 1  # named: it stays

        code, headers, page = get(broker.port, "/status")
        assert code == 200 and headers["content-type"].startswith("text/html")
        assert b"status.json" in page  # what it polls
        assert re.search(rb"(src|href)\s*=|://|@import", page) is None  # self-contained


def test_status_can_be_turned_off(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data", "--no-status") as broker:
        assert get(broker.port, "/status")[0] == 404
        assert get(broker.port, "/status.json")[0] == 404
        assert get(broker.port, "/metrics")[0] == 200


def test_authenticated_broker_wants_an_admin(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert rembus_cli("broker", "--data-dir", str(data), "tenant", "add", ".", "1234"
                      ).returncode == 0
    assert rembus_cli("broker", "--data-dir", str(data), "admin", "add", "boss", "--force"
                      ).returncode == 0
    with BrokerProcess(data, "--authenticated") as broker:
        for path in ("/status", "/status.json", "/metrics"):
            code, headers, _ = get(broker.port, path)
            assert code == 401 and headers["www-authenticate"].startswith("Basic "), path
            assert get(broker.port, path, ("boss", "0000"))[0] == 401
            assert get(broker.port, path, ("intruder", "1234"))[0] == 401
        for path in ("/status", "/metrics"):
            assert get(broker.port, path, ("boss", "1234"))[0] == 200
        seen = status_json(broker.port, ("boss", "1234"))
        refusals = seen["refusals"]
        assert len(refusals) == 6 and {r["kind"] for r in refusals} == {"admin_http"}
        assert refusals[0]["address"].startswith("127.0.0.1:")


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed "
                    "(Debian: apt-get install chromium)")
def test_status_page_in_headless_chromium(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data") as broker, traffic(broker.url):
        done = chromium(f"http://127.0.0.1:{broker.port}/status", tmp_path / "profile",
                        "--dump-dom")
    assert done.returncode == 0, done.stderr
    dom = done.stdout
    assert f"<td>{COMPONENT}</td>" in dom, dom
    assert f"<td>{TOPIC}</td>" in dom, dom
    assert f"<td>{METHOD}</td>" in dom, dom
