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

from rembus_proto.router import POLICIES, RouterConfig
from rembus_proto.security import SecurityError
from rembus_proto.wsmask import use_numpy

from . import cli_client, cli_security
from .cli_types import positive_int
from .memory import keep_freed_memory
from .paths import user_data_dir
from .server import Broker, BrokerConfig
from .version import __version__

log = logging.getLogger("rembus")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _env_port() -> int:
    raw = os.environ.get("REMBUS_PORT")
    if not raw:
        return 8000
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"rembus: REMBUS_PORT must be a port number, not {raw!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rembus`` command."""
    parser = argparse.ArgumentParser(prog="rembus", description="Rembus Pub/Sub and RPC.")
    parser.add_argument("--version", action="version", version=f"rembus {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    broker = commands.add_parser("broker", help="run a broker",
                                 description="Run a Rembus broker.")
    broker.add_argument("--host", default="127.0.0.1", help="address to listen on "
                        "(default 127.0.0.1; 0.0.0.0 for every interface)")
    broker.add_argument("--port", type=int, default=None,
                        help="port to listen on (default $REMBUS_PORT or 8000; 0 = any free)")
    broker.add_argument("--data-dir", type=Path, default=None,
                        help="where the broker keeps its database "
                        "(default $REMBUS_DIR or the user data directory)")
    broker.add_argument("--name", default="broker", help="broker name (default: broker)")
    broker.add_argument("--policy", choices=POLICIES, default=os.environ.get(
        "REMBUS_POLICY", "first_up"), help="how an RPC picks among exposers")
    broker.add_argument("--overwrite-connection", action="store_true",
                        help="a new connection with a connected name replaces the old one")
    broker.add_argument("--max-message-size", type=positive_int, default=60 * 1024 * 1024,
                        help="largest accepted message in bytes (default 60 MiB)")
    broker.add_argument("--max-connections", type=positive_int, default=10_000)
    broker.add_argument("--max-backlog", type=positive_int, default=64 * 1024 * 1024,
                        help="bytes waiting for a slow consumer before it is disconnected")
    broker.add_argument("--retention-max-age", type=float, default=7 * 86_400.0,
                        help="seconds a stored message is kept (default 7 days)")
    broker.add_argument("--retention-max-messages", type=positive_int, default=100_000,
                        help="stored messages kept per topic (default 100000)")
    broker.add_argument("--no-numpy", action="store_true",
                        help="never use numpy, even when installed (by default it unmasks "
                             "large client messages, some twenty times faster)")
    broker.add_argument("--keep-freed-mib", type=int, default=64,
                        help="C heap memory kept for reuse after large messages, in MiB "
                             "(default 64; 0 leaves the C library's default)")
    broker.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    cli_security.add_broker_arguments(broker)
    cli_security.add_commands(commands)
    cli_client.add_commands(commands)
    return parser


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
    )
    return BrokerConfig(
        host=args.host,
        port=args.port if args.port is not None else _env_port(),
        router=router,
        max_message_size=args.max_message_size,
        max_connections=args.max_connections,
        max_backlog=args.max_backlog,
        ssl_context=cli_security.ssl_context(args),
    )


async def _run_broker(config: BrokerConfig, data_dir: Path) -> int:
    from .security import FileSecurity
    from .sqlite_store import SQLiteStore

    security = FileSecurity(data_dir)
    try:
        security.check()
    except SecurityError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    database = data_dir / f"{config.router.name}.sqlite"
    store = SQLiteStore(database)
    broker = Broker(config, store, security)
    try:
        await broker.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
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
    log.info("stopping")
    await broker.stop()
    store.close()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rembus`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
        return asyncio.run(_run_broker(config, data_dir))
    for run_command in (cli_security.run_command, cli_client.run_command):
        handled = run_command(args)
        if handled is not None:
            return handled
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
