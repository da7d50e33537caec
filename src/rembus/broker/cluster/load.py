"""``less_busy`` across brokers: load reports, and the broker a call goes to.

When the broker policy is ``less_busy``, every broker reports each
:attr:`LoadBoard.interval` seconds, for each (tenant, method) that one of its
connected components exposes, the calls in flight at its least busy exposer
of that method (the one ``less_busy`` picks inside that broker), on
``load.<tenant>.<method>``. Every such broker follows the reports of the
others; a report is valid for :data:`VALID_INTERVALS` intervals.

A call no local exposer can serve goes to the broker whose report is lowest
(ties taken in turn), on that broker's subject ``at.<id>.<tenant>.<method>``.
Without a valid report, or when that broker does not answer (gone since its
report) or answers 42/43 (its exposer left since), the call goes to the queue
group of the method, as with the other policies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from rembus_proto.broker import Router

from .subjects import SubjectError, SubjectSpace

#: A report stays valid this many intervals: a broker late by a few (a loaded machine) is
#: not taken for a gone one; a gone one costs a "no responders" and the queue group.
VALID_INTERVALS = 5
#: (tenant, method, broker) reports kept at most; beyond, new ones are ignored.
MAX_REPORTS = 100_000
ORIGIN = "Rembus-Origin"


class LoadBoard:
    """The load reports of the other brokers, and this broker's own (no I/O but NATS)."""

    def __init__(self, router: Router, space: SubjectSpace, broker_id: str,
                 interval: float = 1.0) -> None:
        self.router = router
        self.space = space
        self.broker_id = broker_id
        self.interval = interval
        self.reports: dict[tuple[str, str], dict[str, tuple[int, float]]] = {}
        """(tenant, method) -> broker id -> (calls in flight, valid until)."""
        self._count = 0
        self._turn = 0

    # -- reports -------------------------------------------------------------------

    def own(self, exposed: Iterable[tuple[str, str]]) -> list[tuple[str, bytes]]:
        """This broker's reports: (subject, calls in flight) for each exposed method."""
        out = []
        for tenant, method in exposed:
            load = self.router.load(tenant, method)
            if load is None:
                continue
            try:
                out.append((self.space.load(tenant, method), str(load).encode()))
            except SubjectError:
                continue
        return out

    def received(self, subject: str, origin: str, payload: bytes, now: float) -> None:
        """A report of broker ``origin``."""
        try:
            key = self.space.parse_method(subject, "load")
            load = int(payload)
        except (SubjectError, ValueError):
            return
        if not origin or load < 0:
            return
        brokers = self.reports.get(key)
        if brokers is None or origin not in brokers:
            self._forget_expired(now)
            if self._count >= MAX_REPORTS:
                return
            self._count += 1
            brokers = self.reports.setdefault(key, {})
        brokers[origin] = (load, now + VALID_INTERVALS * self.interval)

    def _forget_expired(self, now: float) -> None:
        if self._count < MAX_REPORTS:
            return
        for key, brokers in list(self.reports.items()):
            for broker, (_, until) in list(brokers.items()):
                if until < now:
                    del brokers[broker]
                    self._count -= 1
            if not brokers:
                del self.reports[key]

    def pick(self, tenant: str, method: str, now: float) -> str | None:
        """The broker with the fewest calls in flight of ``method``; ``None``: no report."""
        brokers = self.reports.get((tenant, method))
        if not brokers:
            return None
        valid = [(load, broker) for broker, (load, until) in brokers.items() if until >= now]
        if not valid:
            return None
        least = min(load for load, _ in valid)
        ties = sorted(broker for load, broker in valid if load == least)
        self._turn += 1
        return ties[self._turn % len(ties)]

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """The valid reports, for ``/status.json``."""
        return [{"tenant": tenant, "method": method, "broker": broker, "in_flight": load}
                for (tenant, method), brokers in sorted(self.reports.items())
                for broker, (load, until) in sorted(brokers.items()) if until >= now]

    # -- on NATS -------------------------------------------------------------------

    async def subscribe(self, nc: Client,
                        on_call: Callable[[str, Msg], Awaitable[None]]) -> None:
        """Follow the others' reports; take the calls sent to this broker."""
        loop = asyncio.get_running_loop()

        async def on_report(msg: Msg) -> None:
            origin = (msg.headers or {}).get(ORIGIN, "")
            self.received(msg.subject, origin, msg.data, loop.time())

        async def on_at(msg: Msg) -> None:
            try:
                tenant, _ = self.space.parse_method(msg.subject, "at")
            except SubjectError:
                return
            await on_call(tenant, msg)

        await nc.subscribe(self.space.loads(), cb=on_report)
        await nc.subscribe(self.space.rpcs_at(self.broker_id), cb=on_at)

    async def keep_reporting(self, exposed: Callable[[], Iterable[tuple[str, str]]],
                             send: Callable[[str, bytes, dict[str, str]], None]) -> None:
        """Send this broker's reports every :attr:`interval`, until cancelled."""
        headers = {ORIGIN: self.broker_id}
        while True:
            await asyncio.sleep(self.interval)
            for subject, payload in self.own(exposed()):
                send(subject, payload, headers)


__all__ = ["VALID_INTERVALS", "LoadBoard"]
