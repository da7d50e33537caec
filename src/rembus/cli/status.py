"""``rembus status``: what a running broker shows in ``/status.json``, as tables."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from rembus.cli.arguments import positive_float

EXIT_OK = 0
EXIT_FAILURE = 1
DEFAULT_URL = "http://127.0.0.1:8000"


def add_commands(commands: Any) -> None:
    """Add ``status`` to the ``rembus`` command."""
    status = commands.add_parser(
        "status", help="show a running broker's components, topics and methods",
        description="Fetch /status.json from a broker and print it as tables.")
    status.add_argument("--url", default=DEFAULT_URL,
                        help="the broker's HTTP (or ws://) address; for a broker run "
                        "--authenticated, http://ADMIN:PIN@host:port (default: %(default)s)")
    status.add_argument("--json", action="store_true", help="print the raw JSON (default: tables)")
    status.add_argument("--timeout", type=positive_float, default=10.0,
                        help="seconds to wait for the broker (default: %(default)s)")


def status_request(url: str) -> urllib.request.Request:
    """The request of ``status.json`` at the broker ``url`` (credentials in it become
    HTTP Basic)."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or ws:// address: {url!r}")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    path = parts.path.rstrip("/")
    if not path.endswith("/status.json"):
        path += "/status.json"
    request = urllib.request.Request(urllib.parse.urlunsplit((scheme, netloc, path, "", "")))
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return request


def fetch(url: str, timeout: float) -> Any:
    """The broker's ``status.json``; raises ``OSError`` or ``ValueError``."""
    with urllib.request.urlopen(status_request(url), timeout=timeout) as reply:
        return json.loads(reply.read())


def table(columns: Sequence[tuple[str, Callable[[dict[str, Any]], Any]]],
          rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as aligned text columns under a header ("(none)" without rows)."""
    if not rows:
        return "  (none)"
    cells = [[title for title, _ in columns]]
    cells += [["" if (v := get(row)) is None else str(v) for _, get in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  " + "  ".join(cell.ljust(width) for cell, width in
                                      zip(line, widths, strict=True)).rstrip()
                     for line in cells)


def render(status: dict[str, Any]) -> str:
    """The tables of ``rembus status``."""
    broker = status["broker"]
    totals = status["totals"]
    omitted = status.get("omitted", {})

    def since(row: dict[str, Any]) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["since"]))

    sections = [
        f"broker {broker['name']} (version {broker['version']}), up {broker['uptime']:.0f} s: "
        f"{totals['connections']} connections, {totals['messages_in']} messages in, "
        f"{totals['messages_out']} out",
        "\ncomponents:",
        table([("name", lambda r: r["name"] or "(anonymous)"), ("address", lambda r: r["address"]),
               ("since", since), ("in", lambda r: r["messages_in"]),
               ("out", lambda r: r["messages_out"])], status["components"]),
        "\ntopics:",
        table([("topic", lambda r: r["topic"]), ("subscribers", lambda r: r["subscribers"]),
               ("publications", lambda r: r["publications"]), ("per s", lambda r: r["rate"])],
              status["topics"]),
        "\nmethods:",
        table([("method", lambda r: r["method"]),
               ("exposers", lambda r: ", ".join(r["exposers"])),
               ("calls", lambda r: r["calls"]), ("per s", lambda r: r["rate"]),
               ("latency ms", lambda r: r["latency_ms"])], status["methods"]),
    ]
    if status.get("backlog"):
        sections += ["\nstored backlog:", table([("component", lambda r: r["component"]),
                                                 ("messages", lambda r: r["messages"])],
                                                status["backlog"])]
    left_out = {name: count for name, count in omitted.items() if count}
    if left_out:
        sections.append("\nnot shown: " + ", ".join(f"{n} {t}" for t, n in left_out.items()))
    return "\n".join(sections)


def run_command(args: argparse.Namespace) -> int | None:
    """Run ``status``; ``None`` for other commands."""
    if args.command != "status":
        return None
    try:
        status = fetch(args.url, args.timeout)
    except urllib.error.HTTPError as exc:
        print(f"rembus status: {args.url}: HTTP {exc.code} {exc.reason}", file=sys.stderr)
        return EXIT_FAILURE
    except (OSError, ValueError) as exc:
        print(f"rembus status: {args.url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(status, indent=2) if args.json else render(status))
    return EXIT_OK
