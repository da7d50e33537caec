"""Authentication and authorization rules of the broker (spec 5.3-5.6, 6.2, 7.10).

:class:`Guard` is the broker's security officer. It answers requests it owns
(challenges, REGISTER, UNREGISTER, the private-topic admin commands) through
:class:`~rembus_proto.broker.effects.Effects` and returns a *decision* for
what it does not own: :class:`Bind` a name to a connection, :class:`LookUpKey`
before going on, :data:`PROCEED` with routing, or :data:`DONE`. Keys are
never read inside the guard: the router turns :class:`LookUpKey` into a
:class:`~rembus_proto.broker.actions.NeedKey` request, holds the connection's
input, and replays it once the driver calls :meth:`Guard.key_found`.
Tenants, admins and private topics come from the
:class:`~rembus_proto.security_port.Security` port; signatures are checked by an
injected :data:`~rembus_proto.security_port.Verify` callable.

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
  lockout resets the count.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..constants import CONFIG_TOPIC, CONNECTION_ID, Status
from ..messages import (
    Admin,
    Attestation,
    Identity,
    Message,
    Register,
    Rpc,
    Unregister,
    challenge_input,
)
from ..security_port import (
    KEY_TYPE_NAMES,
    PublicKey,
    Security,
    SecurityError,
    Verify,
    is_valid_name,
)
from ..topics import check_name, normalize_name, tenant
from .actions import SaveKey
from .config import CLOSE_UNAUTHENTICATED, RouterConfig
from .effects import Effects
from .state import Connection, Twin

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


@dataclass(frozen=True, slots=True)
class Proceed:
    """Route the message as usual."""


@dataclass(frozen=True, slots=True)
class Done:
    """The guard answered or refused the message: nothing more to do."""


@dataclass(frozen=True, slots=True)
class LookUpKey:
    """The registered key of ``name`` is needed: hold the input, ask the driver, retry."""

    name: str


@dataclass(frozen=True, slots=True)
class Bind:
    """Give the connection the twin of ``name``, answering ``msg_id``; then tell
    :meth:`Guard.bound` whether it was done."""

    msg_id: bytes
    name: str
    login: bool = False
    """Bound after a valid ATTESTATION (not a free name)."""
    held: tuple[bytes, str] | None = None
    """An IDENTITY (id, name) held until the login, answered after it."""


Decision = Proceed | Done | LookUpKey | Bind
PROCEED = Proceed()
DONE = Done()


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

    def __init__(self, config: RouterConfig, effects: Effects, security: Security,
                 verify: Verify | None, random: Callable[[int], bytes]) -> None:
        self.config = config
        self.effects = effects
        self.security = security
        self._verify = verify
        self._random = random
        self.authenticated: set[Connection] = set()
        """Connections that logged in with a key."""
        self.gate: set[Connection] = set()
        """Connections whose input is screened by :meth:`admit` before routing."""
        self._closing: set[Connection] = set()
        self._pending: dict[Connection, _Pending] = {}
        self._keys: dict[Connection, tuple[str, PublicKey | None]] = {}
        """Key lookups answered by the driver, each used once."""
        self._pin_failures: dict[str, tuple[int, float]] = {}
        """Tenant -> (wrong PINs in a row, locked until); only tenants that exist."""
        self.private: dict[str, set[str]] = {
            topic: set(names) for topic, names in security.private_topics().items()}
        """Private topic -> names authorized on it."""
        self.trusted: set[Connection] = set()
        """Connections that stand for other brokers of a cluster: they checked the rights
        of their components, so they may use every private topic."""
        self.deferred_keys = False
        """REGISTER saves keys through a :class:`SaveKey` order (set by
        :meth:`Router.use_security`) instead of calling the security port."""

    # -- connections ---------------------------------------------------------

    def on_connect(self, conn: Connection) -> None:
        """In authenticated mode, challenge the new connection at once."""
        if not self.config.authenticated:
            return
        self.gate.add(conn)
        self._send_challenge(conn, CONNECTION_ID, None)

    def forget(self, conn: Connection) -> None:
        """The connection is gone."""
        self._pending.pop(conn, None)
        self._keys.pop(conn, None)
        self.gate.discard(conn)
        self._closing.discard(conn)
        self.authenticated.discard(conn)

    def key_found(self, conn: Connection, name: str, key: PublicKey | None) -> None:
        """The driver's answer to a key lookup for ``conn``: used by the retried input."""
        self._keys[conn] = (name, key)

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
                reason = f"not authenticated within {self.config.challenge_timeout:g} seconds"
                if pending.held is not None:
                    self.effects.reply(conn, pending.held[0], Status.GENERIC_ERROR, reason)
                self._doom(conn, reason, "login_timeout")

    # -- screening (authenticated mode) ---------------------------------------

    def admit(self, conn: Connection, message: Message) -> Decision:
        """Whether input from a screened connection goes on to the router."""
        if conn in self._closing:
            return DONE
        if isinstance(message, (Attestation, Register, Unregister)):
            return PROCEED
        reply = self.effects.reply
        if isinstance(message, Identity):
            conn.learn_generation(message.id)
            name = normalize_name(message.cid)
            pending = self._pending.get(conn)
            if not name:
                reply(conn, message.id, Status.GENERIC_ERROR, "empty cid")
                return DONE
            if pending is not None:
                found, key = self._key(conn, name)
                if not found:
                    return LookUpKey(name)
                if key is not None:
                    pending.held = (message.id, name)  # answered after the attestation
                    return DONE
            reason = f"authentication required: {name} is not registered"
            reply(conn, message.id, Status.GENERIC_ERROR, reason)
            self._doom(conn, reason, "not_registered")
            return DONE
        if isinstance(message, (Rpc, Admin)):
            reply(conn, message.id, Status.GENERIC_ERROR, "authentication required")
        self._doom(conn, "authentication required", "authentication_required")
        return DONE

    # -- login -----------------------------------------------------------------

    def identify(self, conn: Connection, msg_id: bytes, name: str) -> Decision:
        """IDENTITY of a free ``name``: challenge it if it is registered, else bind it."""
        found, key = self._key(conn, name)
        if not found:
            return LookUpKey(name)
        if key is None:
            return Bind(msg_id, name)
        self._send_challenge(conn, msg_id, name)
        return DONE

    def _send_challenge(self, conn: Connection, msg_id: bytes, name: str | None) -> None:
        challenge = self._random(4)
        self._pending[conn] = _Pending(challenge, name,
                                       self.effects.now + self.config.challenge_timeout)
        self.effects.reply(conn, msg_id, Status.CHALLENGE, challenge)

    def receive(self, conn: Connection, message: Attestation | Register | Unregister,
                now: float) -> Decision:
        """ATTESTATION, REGISTER or UNREGISTER."""
        if isinstance(message, Attestation):
            return self._on_attestation(conn, message, now)
        if isinstance(message, Register):
            return self._on_register(conn, message)
        self._on_unregister(conn, message)
        return DONE

    def _on_attestation(self, conn: Connection, msg: Attestation, now: float) -> Decision:
        pending = self._pending.get(conn)
        name = msg.cid
        reason = ""
        if conn.twin.named:
            reason = "already identified"
        elif pending is None:
            reason = "no challenge to answer"
        elif pending.expires <= now:
            reason = "challenge expired"
        elif pending.name is not None and pending.name != name:
            reason = "attestation for another name than the challenged one"
        if not reason:
            assert pending is not None
            found, key = self._key(conn, name)
            if not found:
                return LookUpKey(name)  # the challenge stays until the key is known
            if key is None:
                reason = f"{name} is not registered"
            elif not self._signature_ok(key, challenge_input(pending.challenge, name),
                                        msg.signature):
                reason = "signature verification failed"
        self._pending.pop(conn, None)  # single use, whatever the outcome
        if not reason:
            assert pending is not None
            return Bind(msg.id, name, True, pending.held)
        held = pending.held if pending is not None else None
        self.effects.reply(conn, msg.id, Status.GENERIC_ERROR, reason)
        if held is not None:
            self.effects.reply(conn, held[0], Status.GENERIC_ERROR, reason)
        self._doom(conn, reason, "bad_attestation")
        return DONE

    def _signature_ok(self, key: PublicKey, signed: bytes, signature: bytes) -> bool:
        if self._verify is None:
            return False
        try:
            return bool(self._verify(key, signed, signature))
        except Exception:  # an injected verifier must never break the router
            return False

    def bound(self, conn: Connection, decision: Bind, ok: bool) -> None:
        """The router did (``ok``) or could not do what ``decision`` asked."""
        if not decision.login:
            return
        if not ok:
            if conn in self.gate:
                self._doom(conn, "already connected", "already_connected")
            return
        self.authenticated.add(conn)
        self.gate.discard(conn)
        held = decision.held
        if held is not None:
            if held[1] == decision.name:
                self.effects.reply(conn, held[0], Status.OK, None)
            else:
                self.effects.reply(conn, held[0], Status.GENERIC_ERROR,
                                   f"identity {held[1]} does not match the attested name "
                                   f"{decision.name}")

    # -- registration ----------------------------------------------------------

    def _on_register(self, conn: Connection, msg: Register) -> Decision:
        reply = self.effects.reply
        name = msg.cid
        error = Status.GENERIC_ERROR
        if msg.keytype is None:
            reply(conn, msg.id, error, "this REGISTER form (0.1.x) is not supported")
            return DONE
        if not is_valid_name(name) or check_name(name, self.config.names) is not None:
            reply(conn, msg.id, error, f"invalid name {name!r}")
            return DONE
        if msg.keytype not in KEY_TYPE_NAMES:
            reply(conn, msg.id, error, f"unknown key type {msg.keytype}")
            return DONE
        domain = tenant(name)
        pin = self.security.tenant_pin(domain)
        if pin is None:
            reply(conn, msg.id, error, f"tenant [{domain}] not enabled")
            return DONE
        if not self._pin_accepted(domain, pin, msg.pin, conn, msg.id):
            return DONE
        found, key = self._key(conn, name)
        if not found:
            return LookUpKey(name)  # the PIN is checked again on the retry
        if key is not None:
            reply(conn, msg.id, Status.NAME_ALREADY_TAKEN, f"name {name} already registered")
            return DONE
        if self.deferred_keys:
            self.effects.emit(SaveKey(conn, msg.id, name, PublicKey(msg.pubkey, msg.keytype)))
            return DONE
        try:
            self.security.save_key(name, PublicKey(msg.pubkey, msg.keytype))
        except SecurityError as exc:
            reply(conn, msg.id, error, str(exc))
            return DONE
        reply(conn, msg.id, Status.OK, None)
        return DONE

    def key_saved(self, conn: Connection, msg_id: bytes, name: str,
                  refusal: str | None, taken: bool) -> None:
        """The outcome of a :class:`SaveKey`: answer the REGISTER."""
        if conn.closed:
            return
        if taken:
            self.effects.reply(conn, msg_id, Status.NAME_ALREADY_TAKEN,
                               f"name {name} already registered")
        elif refusal is not None:
            self.effects.reply(conn, msg_id, Status.GENERIC_ERROR, refusal)
        else:
            self.effects.reply(conn, msg_id, Status.OK, None)

    def _pin_accepted(self, domain: str, pin: str, given: str, conn: Connection,
                      msg_id: bytes) -> bool:
        """Check a tenant PIN under the lockout rule; answer the REGISTER if it fails."""
        problem = self.check_pin(domain, pin, given, self.effects.now)
        if problem is not None:
            self.effects.reply(conn, msg_id, Status.GENERIC_ERROR, problem)
        return problem is None

    def check_pin(self, domain: str, pin: str, given: str, now: float) -> str | None:
        """``given`` against the PIN ``pin`` of tenant ``domain``, under the lockout
        rule: ``None`` when it is accepted, else why not."""
        failures, locked_until = self._pin_failures.get(domain, (0, 0.0))
        if now < locked_until:
            return (f"tenant [{domain}]: too many wrong PINs, try again in "
                    f"{math.ceil(locked_until - now)} s")
        if hmac.compare_digest(pin.encode(), given.encode()):
            self._pin_failures.pop(domain, None)
            return None
        failures += 1
        config = self.config
        if failures >= config.pin_attempts:
            extra = min(failures - config.pin_attempts, 6)
            locked_until = now + min(config.pin_lockout * (1 << extra), _MAX_PIN_LOCKOUT)
        self._pin_failures[domain] = (failures, locked_until)
        return "wrong tenant/pin"

    def admin_password(self, name: str, password: str, now: float) -> str | None:
        """An admin's password check outside the protocol (HTTP Basic): ``name`` must be
        an admin and ``password`` the PIN of its tenant, under the same lockout rule as
        REGISTER. ``None`` when accepted, else why not."""
        domain = tenant(name)
        pin = self.security.tenant_pin(domain)
        if not self.security.is_admin(name) or pin is None:
            return f"{name} is not an admin with a tenant PIN"
        return self.check_pin(domain, pin, password, now)

    def _on_unregister(self, conn: Connection, msg: Unregister) -> None:
        reply = self.effects.reply
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
        return (conn.twin.name in names and conn in self.authenticated) or conn in self.trusted

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
        private = self.private  # readers keep a reference: update it in place
        private.clear()
        private.update((topic, set(names))
                       for topic, names in self.security.private_topics().items())

    def admin_command(self, conn: Connection, msg: Admin) -> None:
        """private_topic, public_topic, authorize, unauthorize, private_topics_config."""
        reply = self.effects.reply
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

    def _key(self, conn: Connection, name: str) -> tuple[bool, PublicKey | None]:
        """``(True, key)`` when the driver answered a lookup of ``name``, used once."""
        answer = self._keys.pop(conn, None)
        if answer is not None and answer[0] == name:
            return True, answer[1]
        return False, None

    def _doom(self, conn: Connection, reason: str, kind: str) -> None:
        """Close ``conn`` and ignore whatever else it sends; a login failure of ``kind``."""
        self.effects.stats.refused(self.effects.wall, conn.peer, kind, reason)
        self._pending.pop(conn, None)
        self.authenticated.discard(conn)
        self.gate.add(conn)
        self._closing.add(conn)
        self.effects.close(conn, CLOSE_UNAUTHENTICATED, reason)


__all__ = ["BROKER_COMMANDS", "DONE", "PROCEED", "SECURITY_COMMANDS", "TOPIC_COMMANDS",
           "UNAUTHORIZED", "Bind", "Decision", "Done", "Guard", "LookUpKey", "Proceed"]
