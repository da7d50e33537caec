"""Authentication and authorization rules of the router (spec 5.3-5.6, 6.2, 7.10).

:class:`Guard` is the router's security officer. The router calls it from a
few places only: when a connection opens or goes away, on IDENTITY of a
registered name, on ATTESTATION / REGISTER / UNREGISTER, on the privileged
admin commands, on timers, and - only for connections still to be
authenticated in "authenticated" mode - before any other input. Keys,
tenants, admins and private topics are reached through the
:class:`~rembus_proto.security.Security` port; signatures through an
injected :data:`~rembus_proto.security.Verify` callable.

Rules, in short:

* IDENTITY of a registered name is answered with a 4-byte challenge
  (status 11); the name is bound only after an ATTESTATION whose signature
  over CBOR ``[challenge, name]`` verifies with the registered key.
* A challenge is single-use and expires after ``challenge_timeout``; an
  attestation that fails (no or stale challenge, another name, unknown name,
  bad signature) is answered with status 10 and the connection is closed.
* In authenticated mode every connection gets an unsolicited challenge at
  once; until it is answered, IDENTITY is held, PUB/RPC/ADMIN (and anything
  else but ATTESTATION/REGISTER/UNREGISTER) close the connection, and so
  does the challenge timeout.
* A name is an admin, or authorized on a private topic, only on a connection
  that logged in with a key.
* After ``pin_attempts`` wrong PINs in a row for a tenant, REGISTER for that
  tenant is refused, right PIN or not, for ``pin_lockout`` seconds, doubled
  by each wrong PIN after that (at most an hour); a right PIN outside a
  lockout resets the count. Guessing a short PIN takes years, not minutes.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .constants import CONFIG_TOPIC, CONNECTION_ID, Status
from .messages import (
    Admin,
    Attestation,
    Identity,
    Message,
    Register,
    Rpc,
    Unregister,
    challenge_input,
)
from .security import KEY_TYPE_NAMES, PublicKey, Security, SecurityError, Verify, is_valid_name
from .topics import normalize_name, tenant

if TYPE_CHECKING:
    from .router import Connection, Router, Twin

#: WebSocket close code for a connection refused by the security rules (policy violation).
CLOSE_UNAUTHENTICATED = 1008

#: Admin commands that change or show the private topics; admins only.
SECURITY_COMMANDS = frozenset({"private_topic", "public_topic", "authorize", "unauthorize",
                               "private_topics_config", "topics_config"})
#: Broker-level admin commands (spec 6.2), for admins only.
BROKER_COMMANDS = frozenset({"broker_config", "load_config", "save_config", "shutdown"})
#: Admin commands that need authorization when their topic is private.
TOPIC_COMMANDS = frozenset({"subscribe", "add_interest", "unsubscribe", "remove_interest",
                            "expose", "add_impl", "unexpose", "remove_impl"})

UNAUTHORIZED = "unauthorized"
_MAX_PIN_LOCKOUT = 3600.0


class _Pending:
    """A challenge sent to a connection and not answered yet."""

    __slots__ = ("challenge", "expires", "held", "name")

    def __init__(self, challenge: bytes, name: str | None, expires: float) -> None:
        self.challenge = challenge
        self.name = name
        """The name the challenge was sent for; ``None`` for the unsolicited one."""
        self.expires = expires
        self.held: tuple[bytes, str] | None = None
        """An IDENTITY (id, name) waiting for the attestation (authenticated mode)."""


class Guard:
    """Authentication state of the connections and the private topics of a router."""

    def __init__(self, router: Router, security: Security, verify: Verify | None,
                 random: Callable[[int], bytes]) -> None:
        self._router = router
        self.security = security
        self._verify = verify
        self._random = random
        self.authenticated: set[Connection] = set()
        """Connections that logged in with a key."""
        self.gate: set[Connection] = set()
        """Connections whose input is screened by :meth:`admit` before routing."""
        self._closing: set[Connection] = set()
        self._pending: dict[Connection, _Pending] = {}
        self._pin_failures: dict[str, tuple[int, float]] = {}
        """Tenant -> (wrong PINs in a row, locked until); only tenants that exist."""
        self.private: dict[str, set[str]] = {
            topic: set(names) for topic, names in security.private_topics().items()}
        """Private topic -> names authorized on it (shared with the router)."""

    # -- connections ---------------------------------------------------------

    def on_connect(self, conn: Connection, now: float) -> None:
        """In authenticated mode, challenge the new connection at once."""
        if not self._router.config.authenticated:
            return
        self.gate.add(conn)
        self._send_challenge(conn, CONNECTION_ID, None, now)

    def forget(self, conn: Connection) -> None:
        """The connection is gone."""
        self._pending.pop(conn, None)
        self.gate.discard(conn)
        self._closing.discard(conn)
        self.authenticated.discard(conn)

    def next_deadline(self) -> float | None:
        """When a challenge expires next."""
        if not self._pending:
            return None
        return min(p.expires for p in self._pending.values())

    def handle_timer(self, now: float) -> None:
        """Forget expired challenges; close connections that did not authenticate in time."""
        if not self._pending:
            return
        expired = [conn for conn, p in self._pending.items() if p.expires <= now]
        for conn in expired:
            pending = self._pending.pop(conn)
            if conn in self.gate and conn not in self._closing:
                reason = (f"not authenticated within "
                          f"{self._router.config.challenge_timeout:g} seconds")
                if pending.held is not None:
                    self._router._reply(conn, pending.held[0], Status.GENERIC_ERROR, reason)
                self._doom(conn, reason)

    # -- screening (authenticated mode) ---------------------------------------

    def admit(self, conn: Connection, message: Message) -> bool:
        """Whether input from a screened connection goes on to the router."""
        if conn in self._closing:
            return False
        if isinstance(message, (Attestation, Register, Unregister)):
            return True
        router = self._router
        if isinstance(message, Identity):
            router._learn_generation(conn, message.id)
            name = normalize_name(message.cid)
            pending = self._pending.get(conn)
            if not name:
                router._reply(conn, message.id, Status.GENERIC_ERROR, "empty cid")
            elif pending is None or self.security.public_key(name) is None:
                reason = f"authentication required: {name} is not registered"
                router._reply(conn, message.id, Status.GENERIC_ERROR, reason)
                self._doom(conn, reason)
            else:
                pending.held = (message.id, name)  # answered after the attestation
            return False
        if isinstance(message, (Rpc, Admin)):
            router._reply(conn, message.id, Status.GENERIC_ERROR, "authentication required")
        self._doom(conn, "authentication required")
        return False

    # -- login -----------------------------------------------------------------

    def challenge(self, conn: Connection, msg_id: bytes, name: str, now: float) -> bool:
        """IDENTITY of ``name``: challenge it if it is registered (then return True)."""
        if self.security.public_key(name) is None:
            return False
        self._send_challenge(conn, msg_id, name, now)
        return True

    def _send_challenge(self, conn: Connection, msg_id: bytes, name: str | None,
                        now: float) -> None:
        challenge = self._random(4)
        self._pending[conn] = _Pending(challenge, name,
                                       now + self._router.config.challenge_timeout)
        self._router._reply(conn, msg_id, Status.CHALLENGE, challenge)

    def receive(self, conn: Connection, message: Attestation | Register | Unregister,
                now: float) -> None:
        """ATTESTATION, REGISTER or UNREGISTER."""
        if isinstance(message, Attestation):
            self._on_attestation(conn, message, now)
        elif isinstance(message, Register):
            self._on_register(conn, message)
        else:
            self._on_unregister(conn, message)

    def _on_attestation(self, conn: Connection, msg: Attestation, now: float) -> None:
        pending = self._pending.pop(conn, None)  # single use, whatever the outcome
        name = msg.cid
        if conn.twin.named:
            reason = "already identified"
        elif pending is None:
            reason = "no challenge to answer"
        elif pending.expires <= now:
            reason = "challenge expired"
        elif pending.name is not None and pending.name != name:
            reason = "attestation for another name than the challenged one"
        else:
            key = self.security.public_key(name)
            if key is None:
                reason = f"{name} is not registered"
            elif not self._signature_ok(key, challenge_input(pending.challenge, name),
                                        msg.signature):
                reason = "signature verification failed"
            else:
                self._login(conn, msg.id, name, pending)
                return
        held = pending.held if pending is not None else None
        self._router._reply(conn, msg.id, Status.GENERIC_ERROR, reason)
        if held is not None:
            self._router._reply(conn, held[0], Status.GENERIC_ERROR, reason)
        self._doom(conn, reason)

    def _signature_ok(self, key: PublicKey, signed: bytes, signature: bytes) -> bool:
        if self._verify is None:
            return False
        try:
            return bool(self._verify(key, signed, signature))
        except Exception:  # an injected verifier must never break the router
            return False

    def _login(self, conn: Connection, msg_id: bytes, name: str, pending: _Pending) -> None:
        router = self._router
        self.authenticated.add(conn)
        if not router._bind(conn, msg_id, name):
            self.authenticated.discard(conn)
            if conn in self.gate:
                self._doom(conn, "already connected")
            return
        self.gate.discard(conn)
        held = pending.held
        if held is not None:
            if held[1] == name:
                router._reply(conn, held[0], Status.OK, None)
            else:
                router._reply(conn, held[0], Status.GENERIC_ERROR,
                              f"identity {held[1]} does not match the attested name {name}")

    # -- registration ----------------------------------------------------------

    def _on_register(self, conn: Connection, msg: Register) -> None:
        reply = self._router._reply
        name = msg.cid
        error = Status.GENERIC_ERROR
        if msg.keytype is None:
            reply(conn, msg.id, error, "this REGISTER form (0.1.x) is not supported")
            return
        if not is_valid_name(name):
            reply(conn, msg.id, error, f"invalid name {name!r}")
            return
        if msg.keytype not in KEY_TYPE_NAMES:
            reply(conn, msg.id, error, f"unknown key type {msg.keytype}")
            return
        domain = tenant(name)
        pin = self.security.tenant_pin(domain)
        if pin is None:
            reply(conn, msg.id, error, f"tenant [{domain}] not enabled")
            return
        if not self._pin_accepted(domain, pin, msg.pin, conn, msg.id):
            return
        if self.security.public_key(name) is not None:
            reply(conn, msg.id, Status.NAME_ALREADY_TAKEN, f"name {name} already registered")
            return
        try:
            self.security.save_key(name, PublicKey(msg.pubkey, msg.keytype))
        except SecurityError as exc:
            reply(conn, msg.id, error, str(exc))
            return
        reply(conn, msg.id, Status.OK, None)

    def _pin_accepted(self, domain: str, pin: str, given: str, conn: Connection,
                      msg_id: bytes) -> bool:
        """Check a tenant PIN under the lockout rule; answer the REGISTER if it fails."""
        reply = self._router._reply
        now = self._router._now
        failures, locked_until = self._pin_failures.get(domain, (0, 0.0))
        if now < locked_until:
            reply(conn, msg_id, Status.GENERIC_ERROR,
                  f"tenant [{domain}]: too many wrong PINs, try again in "
                  f"{math.ceil(locked_until - now)} s")
            return False
        if hmac.compare_digest(pin.encode(), given.encode()):
            self._pin_failures.pop(domain, None)
            return True
        failures += 1
        config = self._router.config
        if failures >= config.pin_attempts:
            extra = min(failures - config.pin_attempts, 6)
            locked_until = now + min(config.pin_lockout * (1 << extra), _MAX_PIN_LOCKOUT)
        self._pin_failures[domain] = (failures, locked_until)
        reply(conn, msg_id, Status.GENERIC_ERROR, "wrong tenant/pin")
        return False

    def _on_unregister(self, conn: Connection, msg: Unregister) -> None:
        reply = self._router._reply
        twin = conn.twin
        if (not twin.named or conn not in self.authenticated
                or (msg.cid is not None and normalize_name(msg.cid) != twin.name)):
            reply(conn, msg.id, Status.GENERIC_ERROR, "invalid operation")
            return
        try:
            self.security.delete_key(twin.name)
        except SecurityError as exc:
            reply(conn, msg.id, Status.GENERIC_ERROR, str(exc))
            return
        reply(conn, msg.id, Status.OK, None)

    # -- authorization -----------------------------------------------------------

    def is_admin(self, conn: Connection) -> bool:
        """An admin listed by the security port, logged in with its key."""
        return conn in self.authenticated and self.security.is_admin(conn.twin.name)

    def allowed(self, conn: Connection, names: set[str]) -> bool:
        """Whether ``conn`` may use a private topic whose authorized names are ``names``."""
        return conn.twin.name in names and conn in self.authenticated

    def permits(self, conn: Connection, topic: str) -> bool:
        """Whether ``conn`` may use ``topic`` (always, for a public topic)."""
        names = self.private.get(topic)
        return names is None or self.allowed(conn, names)

    def only_allowed(self, twins: Iterable[Twin], names: set[str]) -> list[Twin]:
        """The connected twins among ``twins`` authorized on a private topic."""
        authenticated = self.authenticated
        return [twin for twin in twins if twin.name in names and twin.conn is not None
                and twin.conn in authenticated]

    def reload(self) -> None:
        """Read the private topics again from the security port (admin ``load_config``)."""
        private = self.private  # shared with the router: update it in place
        private.clear()
        private.update((topic, set(names))
                       for topic, names in self.security.private_topics().items())

    def admin_command(self, conn: Connection, msg: Admin) -> None:
        """private_topic, public_topic, authorize, unauthorize, private_topics_config."""
        reply = self._router._reply
        cmd = msg.cmd
        if not self.is_admin(conn):
            reply(conn, msg.id, Status.GENERIC_ERROR, UNAUTHORIZED)
            return
        if cmd in ("private_topics_config", "topics_config"):
            reply(conn, msg.id, Status.OK,
                  {topic: sorted(names) for topic, names in self.private.items()})
            return
        topic = msg.topic
        if not topic or topic == CONFIG_TOPIC:
            reply(conn, msg.id, Status.GENERIC_ERROR, f"{cmd} needs a topic")
            return
        names = self.private.get(topic)
        new: set[str] | None
        if cmd == "private_topic":
            new = set(names or ())
        elif cmd == "public_topic":
            new = None
        else:
            command: dict[Any, Any] = msg.command
            cid = command.get("cid")
            if not isinstance(cid, str) or not cid:
                reply(conn, msg.id, Status.GENERIC_ERROR, f"{cmd} needs a cid")
                return
            if cmd == "unauthorize" and names is None:
                reply(conn, msg.id, Status.OK, None)  # a public topic: nothing to revoke
                return
            new = set(names or ())
            if cmd == "authorize":
                new.add(cid)
            else:
                new.discard(cid)
        try:
            self.security.save_private_topic(topic, None if new is None else sorted(new))
        except SecurityError as exc:
            reply(conn, msg.id, Status.GENERIC_ERROR, str(exc))
            return
        if new is None:
            self.private.pop(topic, None)
        else:
            self.private[topic] = new
        reply(conn, msg.id, Status.OK, None)

    # -- helpers -----------------------------------------------------------------

    def _doom(self, conn: Connection, reason: str) -> None:
        """Close ``conn`` and ignore whatever else it sends."""
        self._pending.pop(conn, None)
        self.authenticated.discard(conn)
        self.gate.add(conn)
        self._closing.add(conn)
        self._router._close(conn, CLOSE_UNAUTHENTICATED, reason)


__all__ = ["BROKER_COMMANDS", "CLOSE_UNAUTHENTICATED", "SECURITY_COMMANDS", "TOPIC_COMMANDS",
           "Guard"]
