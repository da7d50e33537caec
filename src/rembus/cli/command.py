"""The ``rembus`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rembus import eventloop, logs
from rembus.broker.datadir import DataDirBusy, DataDirLock
from rembus.broker.memory import keep_freed_memory
from rembus.broker.server import Broker, BrokerConfig
from rembus.cli import client as cli_client
from rembus.cli import security as cli_security
from rembus.cli import status as cli_status
from rembus.cli.arguments import (
    EXIT_USAGE,
    Parser,
    env_port,
    non_negative_int,
    port,
    positive_float,
    positive_int,
    usage_error,
)
from rembus.paths import user_data_dir
from rembus.version import __version__
from rembus_proto.broker import POLICIES, RouterConfig
from rembus_proto.security_port import SecurityError
from rembus_proto.topics import NameLimits
from rembus_proto.wsmask import use_numpy

log = logging.getLogger("rembus")

EXIT_OK = 0
EXIT_FAILURE = 1


def _env_policy() -> str:
    policy = os.environ.get("REMBUS_POLICY", "").strip() or "first_up"
    if policy not in POLICIES:
        usage_error(f"REMBUS_POLICY must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rembus`` command."""
    parser = Parser(prog="rembus", description="Rembus Pub/Sub and RPC.")
    parser.add_argument("--version", action="version", version=f"rembus {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = commands.add_parser("broker", help="run a broker",
                                 description="Run a Rembus broker.")
    broker.add_argument("--host", default="127.0.0.1", help="address to listen on "
                        "(default: %(default)s; 0.0.0.0 for every interface)")
    broker.add_argument("--port", type=port, default=None,
                        help="port to listen on, 0-65535 (default: $REMBUS_PORT or 8000; "
                        "0: any free port)")
    broker.add_argument("--data-dir", type=Path, default=None,
                        help="where the broker keeps its database "
                        "(default: $REMBUS_DIR or the user data directory)")
    broker.add_argument("--name", default="broker", help="broker name (default: %(default)s)")
    broker.add_argument("--policy", choices=POLICIES, default=_env_policy(),
                        help="how an RPC picks among exposers "
                        "(default: $REMBUS_POLICY or first_up, here %(default)s)")
    broker.add_argument("--overwrite-connection", action="store_true",
                        help="a new connection with a connected name replaces the old one "
                        "(default: it is refused)")
    broker.add_argument("--max-message-size", type=positive_int, default=60 * 1024 * 1024,
                        help="largest accepted message in bytes (default: %(default)s, 60 MiB)")
    broker.add_argument("--max-connections", type=positive_int, default=10_000,
                        help="open connections beyond it are refused (default: %(default)s)")
    broker.add_argument("--max-connections-per-address", type=positive_int, default=1000,
                        help="open connections from one IP address beyond it are refused "
                        "(default: %(default)s)")
    broker.add_argument("--identify-timeout", type=positive_float, default=10.0,
                        help="seconds an open WebSocket has to send its first message or "
                        "answer the ping sent when it opens "
                        "(default: %(default)s)")
    broker.add_argument("--keepalive", type=positive_float, default=30.0,
                        help="seconds between server pings; a connection that sends nothing "
                        "for two of them is closed (default: %(default)s)")
    broker.add_argument("--max-partial-bytes", type=positive_int, default=256 * 1024 * 1024,
                        help="bytes of unfinished messages held for all connections; the one "
                        "that goes past it is closed (default: %(default)s, 256 MiB)")
    broker.add_argument("--fragment-timeout", type=positive_float, default=60.0,
                        help="seconds a message has to arrive in full once it started "
                        "(default: %(default)s)")
    broker.add_argument("--close-grace", type=positive_float, default=5.0,
                        help="seconds a closed connection has to read its last bytes before "
                        "it is aborted (default: %(default)s)")
    broker.add_argument("--max-backlog", type=positive_int, default=64 * 1024 * 1024,
                        help="bytes waiting for a slow consumer before it is disconnected "
                        "(default: %(default)s, 64 MiB)")
    broker.add_argument("--retention-max-age", type=positive_float, default=7 * 86_400.0,
                        help="seconds a stored message is kept (default: %(default)s, 7 days)")
    broker.add_argument("--retention-max-messages", type=positive_int, default=100_000,
                        help="stored messages kept per topic (default: %(default)s)")
    retention = RouterConfig()
    broker.add_argument("--retention-max-bytes", type=positive_int,
                        default=retention.retention_max_bytes,
                        help="payload bytes of the stored messages of one topic; the oldest "
                        "go first (default: %(default)s, 1 GiB)")
    broker.add_argument("--retention-max-total-bytes", type=positive_int,
                        default=retention.retention_max_total_bytes,
                        help="payload bytes of all stored messages; the oldest go first "
                        "(default: %(default)s, 8 GiB)")
    broker.add_argument("--no-numpy", action="store_true",
                        help="never use numpy, even when installed (by default it unmasks "
                             "large client messages, some twenty times faster)")
    broker.add_argument("--keep-freed-mib", type=non_negative_int, default=64,
                        help="C heap memory kept for reuse after large messages, in MiB; "
                             "0 leaves the C library's default (default: %(default)s)")
    broker.add_argument("--http-api", action=argparse.BooleanOptionalAction, default=True,
                        help="serve the HTTP API (POST /{topic} publishes, GET /{method} "
                        "calls, ...) on the broker's port (default: on)")
    broker.add_argument("--http-max-body", type=positive_int, default=1024 * 1024,
                        help="bytes of an HTTP request body; larger ones get 413 "
                        "(default: %(default)s, 1 MiB)")
    broker.add_argument("--loop", choices=eventloop.LOOPS, default="auto",
                        help="event loop: uvloop (the rembus[speed] extra), asyncio, or auto: "
                             "uvloop when installed (default: %(default)s)")
    broker.add_argument("--cluster", metavar="URLS", default=None,
                        help="join a cluster of brokers through NATS with JetStream: "
                             "comma-separated NATS URLs, e.g. nats://h1:4222,nats://h2:4222 "
                             "(needs the extra rembus[cluster])")
    broker.add_argument("--cluster-name", default="rembus",
                        help="the Rembus cluster to join on that NATS system "
                             "(default: %(default)s)")
    broker.add_argument("--cluster-replicas", type=positive_int, default=1,
                        help="replicas of the cluster's key-value buckets when this broker "
                             "creates them: 3 on a 3-node NATS cluster (default: %(default)s)")
    broker.add_argument("--cluster-lease-ttl", type=positive_int, default=10,
                        help="seconds a component's name stays taken after its broker died "
                             "(default: %(default)s)")
    _add_router_limits(broker)
    _add_observability(broker)
    logs.add_arguments(broker)
    cli_security.add_broker_arguments(broker)
    cli_security.add_commands(commands)
    cli_client.add_commands(commands)
    cli_status.add_commands(commands)
    return parser


def _add_router_limits(broker: argparse.ArgumentParser) -> None:
    """Budgets of the broker core (README, "Limits")."""
    defaults = RouterConfig()
    names = defaults.names
    broker.add_argument("--max-pending-calls", type=positive_int,
                        default=defaults.max_pending_calls,
                        help="RPCs in flight per connection; more are refused "
                        "(default: %(default)s)")
    broker.add_argument("--max-pending-calls-total", type=positive_int,
                        default=defaults.max_pending_calls_total,
                        help="RPCs in flight in the whole broker; more are refused "
                        "(default: %(default)s)")
    broker.add_argument("--twin-retention", type=positive_float, default=defaults.twin_retention,
                        help="seconds after which a named component that left, owes nothing "
                        "and is not registered is forgotten (default: %(default)s, 30 days)")
    broker.add_argument("--max-name-length", type=positive_int, default=names.max_name_length,
                        help="characters of a component name (default: %(default)s)")
    broker.add_argument("--max-topic-length", type=positive_int,
                        default=names.max_topic_length,
                        help="characters of a topic or pattern (default: %(default)s)")
    broker.add_argument("--max-pattern-segments", type=positive_int,
                        default=names.max_pattern_segments,
                        help="'/'-separated segments of a pattern (default: %(default)s)")


def _add_observability(broker: argparse.ArgumentParser) -> None:
    """What the broker shows of itself over HTTP (README, "Operating the broker")."""
    broker.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True,
                        help="answer GET /metrics in the Prometheus format (needs "
                        "prometheus-client: pip install 'rembus[metrics]'; default: on)")
    broker.add_argument("--metrics-max-labels", type=positive_int,
                        default=RouterConfig().stats_max_labels,
                        help="topics, and methods, counted one by one; the others are counted "
                        "under 'other' (default: %(default)s)")
    broker.add_argument("--status", action=argparse.BooleanOptionalAction, default=True,
                        help="answer GET /status (a page) and GET /status.json (default: on)")


def _router_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`RouterConfig` fields set by :func:`_add_router_limits`."""
    return {
        "max_pending_calls": args.max_pending_calls,
        "max_pending_calls_total": args.max_pending_calls_total,
        "twin_retention": args.twin_retention,
        "stats_max_labels": args.metrics_max_labels,
        "names": NameLimits(max_name_length=args.max_name_length,
                            max_topic_length=args.max_topic_length,
                            max_pattern_segments=args.max_pattern_segments),
    }


def broker_config(args: argparse.Namespace) -> BrokerConfig:
    """The broker configuration that ``rembus broker`` arguments describe."""
    router = RouterConfig(
        name=args.name,
        version=f"python_{__version__}",
        policy=args.policy,
        overwrite_connection=args.overwrite_connection,
        authenticated=args.authenticated,
        challenge_timeout=args.challenge_timeout,
        pin_attempts=args.pin_attempts,
        pin_lockout=args.pin_lockout,
        retention_max_age=args.retention_max_age,
        retention_max_per_topic=args.retention_max_messages,
        retention_max_bytes=args.retention_max_bytes,
        retention_max_total_bytes=args.retention_max_total_bytes,
        **_router_limits(args),
    )
    return BrokerConfig(
        host=args.host,
        port=args.port if args.port is not None else env_port("REMBUS_PORT", 8000),
        router=router,
        max_message_size=args.max_message_size,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        identify_timeout=args.identify_timeout,
        keepalive=args.keepalive,
        close_grace=args.close_grace,
        max_partial_bytes=args.max_partial_bytes,
        fragment_timeout=args.fragment_timeout,
        max_backlog=args.max_backlog,
        metrics=args.metrics,
        status=args.status,
        ssl_context=cli_security.ssl_context(args),
        http_api=args.http_api,
        http_max_body=args.http_max_body,
    )


async def _join_cluster(broker: Broker, args: argparse.Namespace) -> Any:
    """Join the cluster ``--cluster`` names; the running bridge, or ``None`` on failure."""
    try:
        from rembus.broker.cluster.bridge import ClusterBridge, ClusterConfig, parse_servers
    except ImportError as exc:
        log.error("--cluster needs the extra rembus[cluster] (nats-py): %s", exc)
        return None
    try:
        config = ClusterConfig(parse_servers(args.cluster), args.cluster_name,
                               lease_ttl=args.cluster_lease_ttl, replicas=args.cluster_replicas)
        bridge = ClusterBridge(broker, config)
        await bridge.start()
    except Exception as exc:  # any failure to join is reported the same way
        log.error("cannot join cluster %r at %s: %s: %s", args.cluster_name, args.cluster,
                  type(exc).__name__, exc)
        return None
    return bridge


async def _run_broker(config: BrokerConfig, data_dir: Path,
                      args: argparse.Namespace | None = None) -> int:
    from rembus.broker.http_passwords import HttpPasswords
    from rembus.broker.sqlite_store import SQLiteStore
    from rembus.security.file_security import FileSecurity

    security = FileSecurity(data_dir)
    try:
        security.check()
    except SecurityError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    database = data_dir / f"{config.router.name}.sqlite"
    store = SQLiteStore(database)
    broker = Broker(config, store, security, passwords=HttpPasswords(data_dir))
    bridge = None
    if args is not None and args.cluster:
        bridge = await _join_cluster(broker, args)
        if bridge is None:
            store.close()
            return EXIT_FAILURE
    try:
        await broker.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        if bridge is not None:
            await bridge.stop()
        store.close()
        return EXIT_FAILURE
    print(f"rembus {__version__}: broker {config.router.name!r} serving {broker.url} "
          f"(data dir {data_dir})", flush=True)
    stop = broker.stop_requested  # set by SIGINT/SIGTERM or by an admin's shutdown command
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    await stop.wait()
    await broker.stop()
    if bridge is not None:
        await bridge.stop()
    store.close()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rembus`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logs.setup(getattr(args, "log_level", "INFO"), getattr(args, "log_format", "text"))
    if args.command == "broker":
        data_dir = args.data_dir or user_data_dir()
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.error("cannot use data dir %s: %s", data_dir, exc)
            return EXIT_FAILURE
        if args.broker_command:
            return cli_security.run_broker_command(args, data_dir)
        try:
            config = broker_config(args)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.error("cannot set up TLS: %s", exc)
            return EXIT_FAILURE
        use_numpy(not args.no_numpy)
        keep_freed_memory(args.keep_freed_mib << 20)
        try:
            with DataDirLock(data_dir):
                return eventloop.run(_run_broker(config, data_dir, args), args.loop)
        except eventloop.LoopUnavailable as exc:
            log.error("%s", exc)
            return EXIT_FAILURE
        except DataDirBusy as exc:
            log.error("%s", exc)
            return EXIT_FAILURE
    for run_command in (cli_security.run_command, cli_client.run_command,
                        cli_status.run_command):
        handled = run_command(args)
        if handled is not None:
            return handled
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
