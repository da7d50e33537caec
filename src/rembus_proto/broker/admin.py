"""ADMIN commands: interests, exposed methods, reactive mode, broker commands."""

from __future__ import annotations

import math
import sys
from typing import Any

from ..constants import Status
from ..messages import Admin
from ..topics import check_topic
from .actions import ShutdownRequested
from .auth import BROKER_COMMANDS, SECURITY_COMMANDS, TOPIC_COMMANDS, UNAUTHORIZED, Guard
from .effects import Effects
from .index import SubscriptionIndex
from .replay import Archive, Replayer
from .rpc import RpcRouter
from .state import Connection, Twin

_FLOAT_MAX = sys.float_info.max


class AdminCommands:
    """Runs the ADMIN commands of components; answers each one."""

    def __init__(self, effects: Effects, guard: Guard, index: SubscriptionIndex,
                 rpc: RpcRouter, archive: Archive, replayer: Replayer) -> None:
        self.effects = effects
        self.guard = guard
        self.index = index
        self.rpc = rpc
        self.archive = archive
        self.replayer = replayer
        self.names = effects.config.names

    def _check(self, topic: str) -> str | None:
        return check_topic(topic, self.names)

    def receive(self, conn: Connection, msg: Admin) -> None:
        """An ADMIN message from ``conn``."""
        conn.learn_generation(msg.id)
        cmd = msg.cmd
        if cmd is None:
            self.effects.reply(conn, msg.id, Status.GENERIC_ERROR, None)
            return
        assert isinstance(msg.command, dict)
        if cmd in SECURITY_COMMANDS:
            self.guard.admin_command(conn, msg)
            return
        if cmd in BROKER_COMMANDS:
            self._broker_command(conn, msg.id, cmd)
            return
        status, value = self._component_command(conn, msg, cmd)
        self.effects.reply(conn, msg.id, status, value)

    def _component_command(self, conn: Connection, msg: Admin, cmd: str) -> tuple[int, Any]:
        """Interests, exposed methods, reactive mode, setup: the status and value to reply."""
        twin = conn.twin
        topic = msg.topic
        command = msg.command
        guard = self.guard
        if cmd in TOPIC_COMMANDS:
            problem = self._check(topic)
            if problem is not None:
                return Status.GENERIC_ERROR, problem
            if guard.private and not guard.permits(conn, topic):
                return Status.GENERIC_ERROR, UNAUTHORIZED
        if cmd in ("subscribe", "add_interest"):
            msg_from = _msg_from(command)
            if msg_from is None:
                return Status.GENERIC_ERROR, "msg_from must be a non-negative number of nanoseconds"
            self.subscribe(twin, topic, msg_from)
        elif cmd in ("unsubscribe", "remove_interest"):
            self.unsubscribe(twin, topic)
        elif cmd in ("expose", "add_impl"):
            self.rpc.expose(twin, topic)
        elif cmd in ("unexpose", "remove_impl"):
            self.rpc.unexpose(twin, topic)
        elif cmd == "reactive":
            self.set_reactive(twin, bool(command.get("status", False)))
        elif cmd == "setup":
            problem = self._setup(conn, command)
            if problem is not None:
                return Status.GENERIC_ERROR, problem
        else:
            return Status.UNKNOWN_ADMIN_CMD, None
        return Status.OK, None

    def _setup(self, conn: Connection, command: dict[str, Any]) -> str | None:
        """Expose and subscribe in one go, then reactive; private topics the sender may
        not use are skipped. Returns the problem of a refused topic name."""
        exposers = _topics(command.get("exposers"))
        subscribers = _topics(command.get("subscribers"))
        problem = next((p for p in map(self._check, exposers + subscribers) if p), None)
        if problem is not None:
            return problem
        twin = conn.twin
        for name in exposers:
            if self.guard.permits(conn, name):
                self.rpc.expose(twin, name)
        for name in subscribers:
            if name not in twin.subs and self.guard.permits(conn, name):
                self.subscribe(twin, name, 0.0)
        self.set_reactive(twin, True)
        return None

    def _broker_command(self, conn: Connection, msg_id: bytes, cmd: str) -> None:
        """broker_config, load_config, save_config and shutdown: for admins only."""
        if not self.guard.is_admin(conn):
            self.effects.reply(conn, msg_id, Status.GENERIC_ERROR, UNAUTHORIZED)
            return
        value: Any = None
        if cmd == "broker_config":
            value = {"exposers": self.rpc.snapshot(), "subscribers": self.index.snapshot()}
        elif cmd == "load_config":
            self.guard.reload()
        elif cmd == "shutdown":
            self.effects.emit(ShutdownRequested())
        # save_config: keys, tenants, admins and private topics are saved when they change
        self.effects.reply(conn, msg_id, Status.OK, value)

    def subscribe(self, twin: Twin, topic: str, msg_from: float) -> None:
        """Subscribe ``twin`` to ``topic`` (again: with a new ``msg_from``)."""
        if topic in twin.subs:
            self.index.remove(topic, twin, twin.retroactive(topic))
        else:
            twin.since[topic] = self.archive.last_seq
        twin.subs[topic] = msg_from
        self.index.add(topic, twin, twin.retroactive(topic))
        twin.changed(subscription=topic)
        if twin.reactive and twin.named and msg_from > 0 and not twin.replaying:
            self.replayer.start(twin)

    def unsubscribe(self, twin: Twin, topic: str) -> None:
        """Forget the subscription of ``twin`` to ``topic``."""
        if topic in twin.subs:
            self.index.remove(topic, twin, twin.retroactive(topic))
            del twin.subs[topic]
            twin.since.pop(topic, None)
            twin.changed(subscription=topic)

    def set_reactive(self, twin: Twin, on: bool) -> None:
        """Start (replaying what is owed first) or stop deliveries to ``twin``."""
        if on == twin.reactive:
            return
        twin.reactive = on
        if on:
            self.replayer.start(twin)
        else:
            self.replayer.stop(twin)


def _msg_from(command: dict[Any, Any]) -> float | None:
    """``msg_from`` of a subscribe command, or the 0.1.x ``retroactive`` flag."""
    if "msg_from" in command:
        value = command["msg_from"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            # an integer beyond the floats (10**400 ns) is a window older than anything
            return float(value) if value < _FLOAT_MAX else math.inf
        return None
    if command.get("retroactive") is True:
        return math.inf
    return 0.0


def _topics(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


__all__ = ["AdminCommands"]
