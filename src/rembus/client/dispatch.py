"""What every client driver does with the events of the protocol core, written once.

:class:`EventDispatcher` routes each event of a
:class:`~rembus_proto.ClientConnection` (or of a
:class:`~rembus_proto.ClientSession`) to the driver's hooks: request
outcomes, publications, incoming requests, the login (signing a challenge,
a refusal) and restore failures. A driver supplies the hooks for what
differs — how a result reaches a waiting caller, how a handler runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rembus.client.handlers import Outcome, challenge_signature
from rembus.client.options import Options
from rembus.client.url import ComponentURL
from rembus.errors import LoginFailed
from rembus_proto import ClientConnection
from rembus_proto.client_events import (
    ChallengeRequested,
    Connected,
    LoginRefused,
    PublicationReceived,
    RequestReceived,
    RestoreFailed,
)

log = logging.getLogger("rembus")


class EventDispatcher:
    """The event routing shared by the drivers (a mixin of their ``Component``)."""

    conn: ClientConnection
    options: Options
    url: ComponentURL

    def _now(self) -> float:
        raise NotImplementedError

    #: The outcome an event reports for a request, else ``None`` (from the component base).
    _outcome: Callable[[object], Outcome | None]

    def _on_event(self, event: object) -> None:
        """Route one event of the core to the hook that handles it."""
        if event.__class__ is PublicationReceived:  # the most frequent event, first
            self._on_publication(event)
            return
        outcome = self._outcome(event)
        if outcome is not None:
            self._resolve(*outcome)
        elif isinstance(event, PublicationReceived):
            self._on_publication(event)
        elif isinstance(event, RequestReceived):
            self._on_request(event)
        elif isinstance(event, Connected):
            self._on_connected()
        elif isinstance(event, ChallengeRequested):
            try:
                signature = challenge_signature(event)
            except LoginFailed as error:
                self._login_refused(error)
                return
            self.conn.attest(signature, self._now())
        elif isinstance(event, LoginRefused):
            self._login_refused(LoginFailed(event.reason, event.status))
        elif isinstance(event, RestoreFailed):
            log.warning("%s: could not restore %s %s after reconnecting: %s (status %s)",
                        self.url, event.command, event.topic, event.reason, event.status)

    # -- hooks ---------------------------------------------------------------

    def _resolve(self, handle: int, value: Any, error: BaseException | None) -> None:
        """A request or QoS publication ended: hand its outcome to whoever waits."""
        raise NotImplementedError

    def _on_publication(self, event: PublicationReceived) -> None:
        raise NotImplementedError

    def _on_request(self, event: RequestReceived) -> None:
        raise NotImplementedError

    def _on_connected(self) -> None:
        """The login succeeded (after every connect and reconnect)."""
        raise NotImplementedError

    def _login_refused(self, error: LoginFailed) -> None:
        """The broker refused the login, or there is no key to answer its challenge."""
        raise NotImplementedError


__all__ = ["EventDispatcher"]
