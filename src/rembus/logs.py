"""The broker's log lines: plain text or one JSON object per line.

Every line about a connection says who (the component name, or "anonymous
component"), from where (``host:port``) and, for a close, why. With
``--log-format json`` each line is an object with ``time``, ``level``,
``logger``, ``message`` and the line's fields (``event``, ``address``,
``component``, ``reason``...), so that log collectors need no parsing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("rembus.broker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` and ``--log-format`` of ``rembus broker``."""
    parser.add_argument("--log-level", default="INFO", choices=LEVELS, type=str.upper,
                        help="least severe level logged (default: %(default)s; INFO logs "
                        "every connect and disconnect, DEBUG also HTTP requests)")
    parser.add_argument("--log-format", default="text", choices=FORMATS,
                        help="log lines on stderr as plain text or as one JSON object per "
                        "line (default: %(default)s)")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send log records of ``level`` and above to ``stream`` (stderr) as ``fmt`` lines."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def who(name: str | None) -> str:
    """``component 'name'``, or ``anonymous component`` for ``None``."""
    return f"component {name!r}" if name is not None else "anonymous component"


def event(level: int, message: str, **fields: Any) -> None:
    """Log ``message`` on the broker's logger with ``fields`` for the JSON format."""
    log.log(level, "%s", message, extra={"fields": fields})


def connected(address: str, name: str | None) -> None:
    """A component is connected (named once its IDENTITY is accepted)."""
    event(logging.INFO, f"{who(name)} connected from {address}", event="connected",
          address=address, component=name)


def disconnected(address: str, name: str | None, reason: str, *, peer_fault: bool) -> None:
    """A component's connection is over; ``peer_fault``: closed for what the peer sent."""
    event(logging.WARNING if peer_fault else logging.INFO,
          f"{who(name)} from {address} disconnected: {reason}", event="disconnected",
          address=address, component=name, reason=reason)


def refused(address: str, reason: str) -> None:
    """A connection closed before it became a WebSocket (bad request, limit, timeout)."""
    event(logging.WARNING, f"{address} refused: {reason}", event="refused", address=address,
          reason=reason)
