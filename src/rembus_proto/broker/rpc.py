"""RPC routing: exposers, load balancing, forwarding, answers, built-in methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..constants import Status
from ..messages import Response, Rpc
from ..topics import normalize_name
from .auth import UNAUTHORIZED, Guard
from .effects import Effects
from .frames import encode_response_raw, encode_rpc_raw
from .state import Call, Connection, Twin

if TYPE_CHECKING:
    from .cluster import ClusterHooks


class RpcRouter:
    """Forwards requests to an exposer (or a named target) and routes the answers back."""

    def __init__(self, effects: Effects, guard: Guard, twins: dict[str, Twin],
                 first_id: int, builtins: dict[str, Callable[[], Any]]) -> None:
        self.effects = effects
        self.guard = guard
        self.twins = twins
        self.exposers: dict[str, list[Twin]] = {}
        """Topic -> twins that expose it, in the order they did."""
        self._rr: dict[str, int] = {}
        self._call_counter = first_id
        self._builtins = builtins
        self.pending = 0
        """Calls forwarded and not answered yet, broker-wide."""
        self.cluster: ClusterHooks | None = None
        """Set when the broker is joined in a cluster: requests nobody here serves go there."""

    # -- the index of exposers -------------------------------------------------

    def expose(self, twin: Twin, topic: str) -> None:
        """``twin`` serves ``topic`` (persistent)."""
        if topic not in twin.exposed:
            twin.exposed[topic] = None
            self.exposers.setdefault(topic, []).append(twin)
            twin.changed(exposed=topic)
            if self.cluster is not None:
                self.cluster.exposed(twin, topic, True)

    def unexpose(self, twin: Twin, topic: str) -> None:
        """``twin`` no longer serves ``topic``."""
        if topic in twin.exposed:
            del twin.exposed[topic]
            self._drop(twin, topic)
            twin.changed(exposed=topic)
            if self.cluster is not None:
                self.cluster.exposed(twin, topic, False)

    def index(self, twin: Twin) -> None:
        """Make the exposed topics of a twin reachable (loaded, or bound)."""
        for topic in twin.exposed:
            self.exposers.setdefault(topic, []).append(twin)

    def unindex(self, twin: Twin) -> None:
        """Forget the exposed topics of a twin that is gone for good."""
        for topic in twin.exposed:
            self._drop(twin, topic)

    def _drop(self, twin: Twin, topic: str) -> None:
        exposers = self.exposers.get(topic)
        if exposers and twin in exposers:
            exposers.remove(twin)
            if not exposers:
                del self.exposers[topic]

    def snapshot(self) -> dict[str, list[str]]:
        """Every exposed topic with the sorted names of its exposers."""
        return {topic: sorted(t.name for t in twins) for topic, twins in self.exposers.items()}

    def load(self, tenant: str, topic: str) -> int | None:
        """Calls in flight at the least busy connected exposer of ``topic`` in ``tenant``."""
        loads = [len(t.conn.calls) for t in self.exposers.get(topic, ())
                 if t.conn is not None and t.tenant == tenant]
        return min(loads) if loads else None

    # -- requests and answers --------------------------------------------------

    def request(self, conn: Connection, msg: Rpc) -> None:
        """An RPC from ``conn``."""
        conn.learn_generation(msg.id)
        reply = self._error
        requester = conn.twin
        topic = msg.topic
        self.effects.stats.called(topic)
        private = self.guard.private
        acl = private.get(topic) if private else None
        if acl is not None and not self.guard.allowed(conn, acl):
            reply(conn, msg.id, Status.GENERIC_ERROR, UNAUTHORIZED)
            return
        if msg.target is not None:
            target = self.twins.get(normalize_name(msg.target))
            if (target is None or target.conn is None) and self._remote(
                    conn, msg, Status.TARGET_DOWN if target else Status.TARGET_NOT_FOUND,
                    msg.target):
                return
            if target is None:
                reply(conn, msg.id, Status.TARGET_NOT_FOUND, msg.target)
            elif target is requester:
                reply(conn, msg.id, Status.METHOD_LOOPBACK, f"{topic}: method loopback")
            elif target.conn is None:
                reply(conn, msg.id, Status.TARGET_DOWN, msg.target)
            else:
                self._forward(conn, msg, target.conn)
            return
        builtin = self._builtins.get(topic)
        if builtin is not None:
            self.effects.reply(conn, msg.id, Status.OK, builtin())
            return
        exposers = self.exposers.get(topic)
        if not exposers:
            if self._remote(conn, msg, Status.METHOD_NOT_FOUND, f"{topic}: method unknown"):
                return
            reply(conn, msg.id, Status.METHOD_NOT_FOUND, f"{topic}: method unknown")
            return
        if acl is not None:
            exposers = self.guard.only_allowed(exposers, acl)
        chosen = self._select(topic, exposers, requester) if exposers else None
        if chosen is None:
            if exposers and all(t is requester for t in exposers):
                reply(conn, msg.id, Status.METHOD_LOOPBACK, f"{topic}: method loopback")
            elif self._remote(conn, msg, Status.METHOD_UNAVAILABLE,
                              f"{topic}: method unavailable"):
                return
            else:
                reply(conn, msg.id, Status.METHOD_UNAVAILABLE, f"{topic}: method unavailable")
            return
        assert chosen.conn is not None
        self._forward(conn, msg, chosen.conn)

    def _error(self, conn: Connection, msg_id: bytes, status: int, value: str) -> None:
        """Answer a request with an error status (counted)."""
        self.effects.stats.rpc_failed(str(status))
        self.effects.reply(conn, msg_id, status, value)

    def _remote(self, conn: Connection, msg: Rpc, missing: Status, value: str) -> bool:
        """Hand the request to the cluster, if joined and it did not come from there."""
        cluster = self.cluster
        return cluster is not None and cluster.remote_call(conn, msg.id, msg.topic, msg.target,
                                                           msg.data.raw, missing, value)

    def _select(self, topic: str, exposers: list[Twin], requester: Twin) -> Twin | None:
        policy = self.effects.config.policy
        candidates = [t for t in exposers if t is not requester and t.conn is not None
                      and t.tenant == requester.tenant]
        if not candidates:
            return None
        if policy == "first_up":
            return candidates[0]
        if policy == "less_busy":
            return min(candidates, key=lambda t: len(t.conn.calls))  # type: ignore[union-attr]
        index = self._rr.get(topic, 0) % len(candidates)
        self._rr[topic] = index + 1
        return candidates[index]

    def _forward(self, conn: Connection, msg: Rpc, exposer: Connection) -> None:
        config = self.effects.config
        if conn.calls_made >= config.max_pending_calls:
            self._error(conn, msg.id, Status.GENERIC_ERROR, "too many requests in flight")
            return
        if self.pending >= config.max_pending_calls_total:
            self._error(conn, msg.id, Status.GENERIC_ERROR,
                        "too many requests in flight in the broker")
            return
        self._call_counter += 1
        size = 16 if exposer.legacy else 8
        new_id = (self._call_counter & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        frame = encode_rpc_raw(new_id, msg.topic, msg.data.raw)
        if exposer.legacy and len(frame) > config.legacy_max_message:
            self._error(conn, msg.id, Status.GENERIC_ERROR,
                        f"{msg.topic}: request too large for {exposer.twin.name} (0.1.x)")
            return
        now = self.effects.now
        call = exposer.calls[new_id] = Call(conn, msg.id, msg.topic, now + config.call_timeout,
                                            now)
        self.effects.timers.call(exposer, new_id, call)
        conn.calls_made += 1
        self.pending += 1
        self.effects.send(exposer, frame)

    def _done(self, call: Call) -> None:
        """``call`` is answered, failed or forgotten."""
        call.requester.calls_made -= 1
        self.pending -= 1

    def response(self, conn: Connection, msg: Response) -> None:
        """A RESPONSE from an exposer: back to the requester."""
        call = conn.calls.pop(msg.id, None)
        if call is None:
            return  # e.g. an answer to nothing we asked, or a call already forgotten
        requester = call.requester
        self._done(call)
        self.effects.stats.answered(call.topic, self.effects.now - call.started, msg.status)
        if requester.closed:
            return
        frame = encode_response_raw(call.orig_id, msg.status, msg.data.raw)
        if requester.legacy and len(frame) > self.effects.config.legacy_max_message:
            self.effects.reply(requester, call.orig_id, Status.GENERIC_ERROR,
                               f"{call.topic}: response too large for a 0.1.x component")
            return
        self.effects.send(requester, frame)

    def fail_calls(self, conn: Connection) -> None:
        """The exposer behind ``conn`` is gone: its pending calls fail."""
        for call in conn.calls.values():
            self.effects.stats.rpc_failed(str(int(Status.METHOD_UNAVAILABLE)))
            self.effects.reply(call.requester, call.orig_id, Status.METHOD_UNAVAILABLE,
                               f"{call.topic}: exposer {conn.twin.name} disconnected")
            self._done(call)
        conn.calls.clear()

    def expire(self, exposer: Connection, call_id: bytes, call: Call) -> None:
        """Forget ``call``, forwarded to ``exposer``: nobody answered it in time."""
        del exposer.calls[call_id]
        self._done(call)
        self.effects.stats.rpc_failed("timeout")


__all__ = ["RpcRouter"]
