"""Security parts of the ``rembus`` command.

* ``rembus broker --authenticated --tls-cert CERT --tls-key KEY ...``
* ``rembus broker tenant add TENANT PIN | remove TENANT | list``
* ``rembus broker admin add NAME | remove NAME | list``
* ``rembus broker http-password NAME [--remove]`` (the password is read from stdin)
* ``rembus register NAME --pin PIN [--url URL] [--key-type rsa|ecdsa]``
* ``rembus unregister NAME [--url URL]``

Tenants and admins live in files of the broker's data dir
(:mod:`rembus.security.file_security`); a running broker sees changes at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from rembus.cli.arguments import env_float, positive_float, positive_int
from rembus.client.url import base_url, parse
from rembus.errors import RembusError
from rembus.security.file_security import FileSecurity
from rembus.security.tls import server_context

EXIT_OK = 0
EXIT_FAILURE = 1


def add_broker_arguments(broker: argparse.ArgumentParser) -> None:
    """Security options of `rembus broker` (login, PIN lockout, TLS) and its subcommands."""
    broker.add_argument("--authenticated", action="store_true",
                        default=os.environ.get("REMBUS_CONNECTION_MODE") == "authenticated",
                        help="accept only components that log in with a registered key "
                        "(default: off, on when $REMBUS_CONNECTION_MODE is authenticated)")
    broker.add_argument("--challenge-timeout", type=positive_float,
                        default=env_float("REMBUS_CHALLENGE_TIMEOUT", 3.0),
                        help="seconds to answer a login challenge "
                        "(default: $REMBUS_CHALLENGE_TIMEOUT or 3, here %(default)s)")
    broker.add_argument("--pin-attempts", type=positive_int, default=5,
                        help="wrong tenant PINs in a row before the tenant's registrations "
                             "are locked (default: %(default)s)")
    broker.add_argument("--pin-lockout", type=positive_float, default=60.0,
                        help="seconds of the first lockout, doubled by each further wrong PIN, "
                             "at most an hour (default: %(default)s)")
    broker.add_argument("--tls-cert", type=Path, default=None,
                        help="serve wss:// with this certificate (PEM, with its chain; "
                        "default: plain ws://)")
    broker.add_argument("--tls-key", type=Path, default=None,
                        help="private key of --tls-cert (PEM)")
    sub = broker.add_subparsers(dest="broker_command", metavar="{tenant,admin,http-password}")
    data_dir: dict[str, Any] = {"type": Path, "default": argparse.SUPPRESS,
                                "help": "the broker's data dir "
                                "(default: $REMBUS_DIR or the user data directory)"}

    tenant = sub.add_parser("tenant", help="tenants allowed to register components")
    tenant_cmds = tenant.add_subparsers(dest="tenant_command", required=True)
    add = tenant_cmds.add_parser("add", help="enable a tenant (or change its PIN)")
    add.add_argument("tenant", help="the text after the first '.' of names; '.' for names "
                     "without a dot")
    add.add_argument("pin", help="the PIN components give when they register")
    remove = tenant_cmds.add_parser("remove", help="disable a tenant")
    remove.add_argument("tenant", help="the tenant to disable")
    listing = tenant_cmds.add_parser("list", help="print tenants and PINs")
    for parser in (add, remove, listing):
        parser.add_argument("--data-dir", **data_dir)

    admin = sub.add_parser("admin", help="components allowed to run privileged commands")
    admin_cmds = admin.add_subparsers(dest="admin_command", required=True)
    add = admin_cmds.add_parser("add", help="make a (registered) component an admin")
    add.add_argument("admin_name", metavar="NAME", help="the component name")
    add.add_argument("--force", action="store_true",
                     help="grant it even if NAME is not registered yet (whoever registers "
                          "NAME first becomes admin); default: refuse")
    remove = admin_cmds.add_parser("remove", help="take the admin right away")
    remove.add_argument("admin_name", metavar="NAME", help="the component name")
    listing = admin_cmds.add_parser("list", help="print the admins")
    for parser in (add, remove, listing):
        parser.add_argument("--data-dir", **data_dir)

    password = sub.add_parser("http-password", help="set the HTTP API password of a name",
                              description="Set the Basic password a client of the HTTP API "
                              "gives for NAME, read from the first line of stdin (a prompt "
                              "on a terminal). Only its salted hash is stored.")
    password.add_argument("password_name", metavar="NAME", help="the component name")
    password.add_argument("--remove", action="store_true",
                          help="remove the password instead (default: set it)")
    password.add_argument("--data-dir", **data_dir)


def add_commands(commands: Any) -> None:
    """``register`` and ``unregister``."""
    register = commands.add_parser(
        "register", help="register a component's key with a broker",
        description="Make a key pair, register its public key with the broker and keep the "
        "private key in <rembus dir>/NAME/.secret.")
    register.add_argument("component", metavar="NAME", help="component name")
    register.add_argument("--pin", default=os.environ.get("REMBUS_PIN"),
                          help="PIN of the name's tenant (default $REMBUS_PIN)")
    register.add_argument("--url", default=None,
                          help="broker address (default $REMBUS_BASE_URL or ws://127.0.0.1:8000)")
    register.add_argument("--key-type", choices=["rsa", "ecdsa"], default="rsa",
                          help="RSA 2048 or ECDSA P-256 (default: %(default)s)")
    unregister = commands.add_parser(
        "unregister", help="remove a component's registration",
        description="Log in with the component's key, remove it from the broker and delete "
        "the local private key.")
    unregister.add_argument("component", metavar="NAME", help="component name")
    unregister.add_argument("--url", default=None,
                            help="broker address (default $REMBUS_BASE_URL or ws://127.0.0.1:8000)")


def ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The broker's TLS context from ``--tls-cert``/``--tls-key`` (ValueError if half given)."""
    cert, key = args.tls_cert, args.tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    return server_context(cert, key)


def run_broker_command(args: argparse.Namespace, data_dir: Path) -> int:
    """``rembus broker tenant|admin ...``."""
    security = FileSecurity(data_dir)
    try:
        if args.broker_command == "tenant":
            return _tenant(args, security)
        if args.broker_command == "http-password":
            return _http_password(args, data_dir)
        return _admin(args, security)
    except (OSError, ValueError) as exc:
        print(f"rembus: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _tenant(args: argparse.Namespace, security: FileSecurity) -> int:
    if args.tenant_command == "add":
        security.set_tenant(args.tenant, args.pin)
        print(f"tenant {args.tenant} enabled")
    elif args.tenant_command == "remove":
        if not security.remove_tenant(args.tenant):
            print(f"rembus: no tenant {args.tenant}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"tenant {args.tenant} removed")
    else:
        for tenant, pin in sorted(security.tenants().items()):
            print(f"{tenant}\t{pin}")
    return EXIT_OK


def _admin(args: argparse.Namespace, security: FileSecurity) -> int:
    if args.admin_command == "add":
        registered = any(path.exists() for path, _ in security.key_paths(args.admin_name))
        if not registered and not args.force:
            print(f"rembus: {args.admin_name} is not registered, so whoever registers that name "
                  "first would become admin; register it first (rembus register) or pass "
                  "--force", file=sys.stderr)
            return EXIT_FAILURE
        security.add_admin(args.admin_name)
        print(f"{args.admin_name} is an admin")
    elif args.admin_command == "remove":
        if not security.remove_admin(args.admin_name):
            print(f"rembus: {args.admin_name} is not an admin", file=sys.stderr)
            return EXIT_FAILURE
        print(f"{args.admin_name} is no longer an admin")
    else:
        for name in security.admins():
            print(name)
    return EXIT_OK


def _http_password(args: argparse.Namespace, data_dir: Path) -> int:
    from rembus.broker.http_passwords import HttpPasswords

    name = args.password_name
    passwords = HttpPasswords(data_dir)
    if args.remove:
        passwords.set(name, None)
        print(f"{name} has no HTTP password")
        return EXIT_OK
    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass(f"HTTP password of {name}: ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        print("rembus: empty password", file=sys.stderr)
        return EXIT_FAILURE
    passwords.set(name, secret)
    print(f"HTTP password of {name} set")
    return EXIT_OK


def run_command(args: argparse.Namespace) -> int | None:
    """``rembus register`` / ``rembus unregister``; ``None`` for other commands."""
    if args.command not in ("register", "unregister"):
        return None
    from rembus.security.registration import register, unregister

    try:
        url = parse(args.component, base=args.url or base_url())
        if url.name is None:
            raise ValueError("a component name is needed")
        if args.command == "register":
            if not args.pin:
                raise ValueError("--pin is required (or set $REMBUS_PIN)")
            asyncio.run(register(str(url), args.pin, key_type=args.key_type))
            print(f"{url.name} registered at {url.endpoint}")
        else:
            asyncio.run(unregister(str(url)))
            print(f"{url.name} unregistered from {url.endpoint}")
    except (RembusError, OSError, ValueError) as exc:
        print(f"rembus: {args.command} failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


__all__ = ["add_broker_arguments", "add_commands", "run_broker_command", "run_command",
           "ssl_context"]
