"""``rembus pub``, ``rembus sub`` and ``rembus rpc``: quick checks from a shell.

Arguments are read as JSON when they parse (``21.5``, ``[1,2]``, ``{"a":1}``,
``true``, ``null``) and as plain strings otherwise; results and messages are
printed as JSON when they can be, else with ``repr``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from rembus.cli.arguments import positive_float, positive_int
from rembus.errors import RembusError

EXIT_OK = 0
EXIT_FAILURE = 1
COMMANDS = ("pub", "sub", "rpc")


def parse_value(text: str) -> Any:
    """A command-line argument as a value: JSON if it parses, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def show(value: Any) -> str:
    """A value as one printable line."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def add_commands(commands: Any) -> None:
    """Add ``pub``, ``sub`` and ``rpc`` to the ``rembus`` command."""
    url_help = "component URL or name (default: anonymous at $REMBUS_BASE_URL)"
    pub = commands.add_parser("pub", help="publish a message",
                              description="Publish ARGS on TOPIC.")
    pub.add_argument("topic", help="topic to publish on")
    pub.add_argument("args", nargs="*", metavar="ARG", help="arguments (JSON or text)")
    pub.add_argument("--url", default=None, help=url_help)
    pub.add_argument("--qos", type=int, choices=[0, 1, 2], default=0,
                     help="0: fire and forget; 1, 2: wait for the broker's ACK "
                     "(default: %(default)s)")
    sub = commands.add_parser("sub", help="print the messages of a topic",
                              description="Print every message published on TOPIC.")
    sub.add_argument("topic", help="topic (or pattern, e.g. house/*/temp) to print")
    sub.add_argument("--url", default=None, help=url_help)
    sub.add_argument("--retroactive", action="store_true",
                     help="also get what was published while away (needs a named --url; "
                     "default: only what is published from now on)")
    sub.add_argument("--count", type=positive_int, default=None,
                     help="exit after COUNT messages (default: run until Ctrl-C)")
    rpc = commands.add_parser("rpc", help="call a method and print its result",
                              description="Call METHOD with ARGS and print the result.")
    rpc.add_argument("method", help="method to call")
    rpc.add_argument("args", nargs="*", metavar="ARG", help="arguments (JSON or text)")
    rpc.add_argument("--url", default=None, help=url_help)
    rpc.add_argument("--target", default=None,
                     help="call this component directly (default: any exposer)")
    rpc.add_argument("--timeout", type=positive_float, default=None,
                     help="seconds to wait (default: $REMBUS_TIMEOUT or 10)")


def run_command(args: argparse.Namespace) -> int | None:
    """Run ``pub``/``sub``/``rpc``; ``None`` for other commands."""
    if args.command not in COMMANDS:
        return None
    from rembus import sync

    try:
        with sync.component(args.url) as rb:
            if args.command == "pub":
                rb.publish(args.topic, *map(parse_value, args.args), qos=args.qos)
            elif args.command == "rpc":
                values = map(parse_value, args.args)
                if args.target:
                    result = rb.direct(args.target, args.method, *values, timeout=args.timeout)
                else:
                    result = rb.rpc(args.method, *values, timeout=args.timeout)
                print(show(result))
            else:
                _subscribe(rb, args)
    except (RembusError, ValueError, TypeError) as exc:
        print(f"rembus {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _subscribe(rb: Any, args: argparse.Namespace) -> None:
    done = threading.Event()
    seen = 0

    def printer(*values: Any) -> None:
        nonlocal seen
        print(" ".join(show(v) for v in values), flush=True)
        seen += 1
        if args.count is not None and seen >= args.count:
            done.set()

    rb.subscribe(printer, args.retroactive, topic=args.topic)
    print(f"subscribed to {args.topic}", file=sys.stderr, flush=True)
    if args.count is None:
        rb.forever()
    else:
        done.wait()
