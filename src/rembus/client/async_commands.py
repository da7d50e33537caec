"""What the async drivers (:mod:`rembus.client.aio` on asyncio,
:mod:`rembus.anyio` on anyio) share: the request methods, each of which queues
a request on the protocol core and waits for its outcome the driver's way
(:meth:`_wait`), and the calls of the handlers of publications and requests,
which run a plain function inline and hand an awaitable to the driver
(:meth:`_spawn`)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from rembus.client.base import ComponentBase
from rembus.client.dataframes import PLAIN_TYPES
from rembus.client.dispatch import EventDispatcher
from rembus.client.handlers import (
    Handler,
    exposer_call,
    response_for_error,
    response_for_result,
)
from rembus_proto.client_events import PublicationReceived, RequestReceived

log = logging.getLogger("rembus")

#: Called with a handler's result, or with the error it raised.
Done = Callable[[Any, "BaseException | None"], None]


class _Signal(Protocol):
    def set(self) -> None: ...


class AsyncCommands(EventDispatcher, ComponentBase):
    """``rpc``, ``direct``, ``subscribe`` ... of an async component, and its handler
    calls. A driver supplies :meth:`_wait`, :meth:`_write_queued`, :meth:`_spawn`
    and :meth:`_answered`; its ``Component`` derives from this class alone, so
    that these methods come before the hooks of :class:`EventDispatcher`.
    :meth:`_await_handler` runs a spawned handler in one of the driver's
    ``_slots`` and sets ``_room`` when it ends."""

    _slots: AbstractAsyncContextManager[Any]
    _room: _Signal

    async def _wait(self, handle: int) -> Any:
        """Write the request of ``handle`` and return its outcome (or raise it)."""
        raise NotImplementedError

    def _write_queued(self) -> None:
        """Write what the core queued; nothing is awaited."""
        raise NotImplementedError

    def _spawn(self, awaitable: Awaitable[Any], done: Done) -> None:
        """Await what an ``async`` handler returned, then call ``done`` with its outcome."""
        raise NotImplementedError

    def _answered(self) -> None:
        """A handler ended after its event was handled: write the ACK or answer queued."""
        raise NotImplementedError

    def _after_handler(self) -> None:
        """Runs in the slot of an awaited handler once ``done`` was called."""

    async def _await_handler(self, awaitable: Awaitable[Any], done: Done) -> None:
        """Await a handler's result in a slot (``max_handler_tasks``) and report it."""
        try:
            async with self._slots:
                try:
                    result = await awaitable
                except Exception as exc:
                    done(None, exc)
                else:
                    done(result, None)
                self._after_handler()
        finally:
            self._room.set()

    async def rpc(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` through the broker and return its result."""
        return await self._wait(self._rpc_handle(method, args, None, timeout))

    async def direct(self, target: str, method: str, *args: Any,
                     timeout: float | None = None) -> Any:
        """Call ``method`` on the component named ``target``."""
        return await self._wait(self._rpc_handle(method, args, target, timeout))

    async def subscribe(self, fn: Handler, retroactive: bool = False, *,
                        topic: str | None = None) -> None:
        """Call ``fn(*args)`` for every message on ``topic`` (default: ``fn.__name__``).

        With ``retroactive=True`` a named component also gets, when it comes
        back, what was published while it was away. Delivery starts at once
        (the component turns reactive) unless :meth:`unreactive` was called;
        messages that arrive for topics subscribed later are held for them
        (``Options.max_held_messages``) and handed over here, in order.
        """
        await self._admin(self._subscribe_handle(fn, retroactive, topic))
        if self._wants_reactive():
            await self.reactive()

    async def unsubscribe(self, fn_or_topic: Handler | str) -> None:
        """Stop receiving a topic."""
        await self._admin(self._unsubscribe_handle(fn_or_topic))

    async def expose(self, fn: Handler, *, topic: str | None = None) -> None:
        """Serve RPC calls of ``topic`` (default: ``fn.__name__``) with ``fn``."""
        await self._admin(self._expose_handle(fn, topic))

    async def unexpose(self, fn_or_topic: Handler | str) -> None:
        """Stop serving a method."""
        await self._admin(self._unexpose_handle(fn_or_topic))

    async def reactive(self) -> None:
        """Start (or resume) receiving publications, stored ones first."""
        await self._admin(self._reactive_handle(True))

    async def unreactive(self) -> None:
        """Pause the delivery of publications (the broker stores them for later)."""
        await self._admin(self._reactive_handle(False))

    async def admin(self, topic: str, command: dict[str, Any]) -> Any:
        """Send a broker admin command and return its answer.

        E.g. ``admin("secret", {"cmd": "private_topic"})``,
        ``admin("secret", {"cmd": "authorize", "cid": "alice"})`` or
        ``admin("__config__", {"cmd": "private_topics_config"})``.
        """
        return await self._wait(self._admin_handle(topic, command))

    async def _admin(self, handle: int | None) -> None:
        if handle is None:
            self._write_queued()  # no answer to wait for; still write what was queued
        else:
            await self._wait(handle)

    # -- handler calls ---------------------------------------------------------

    def _on_publication(self, event: PublicationReceived) -> None:
        call = self._publication_call(event)
        if call is None:
            return
        handler, args = call
        if event.msg_id is None:  # QoS0: nothing to acknowledge, no closure needed
            try:
                result = handler(*args)
            except Exception as exc:
                self._subscriber_raised(event, exc)
                return
            if type(result) in PLAIN_TYPES or not inspect.isawaitable(result):
                return
            handler, args = _awaited, (result,)

        def report(_: Any, error: BaseException | None) -> None:
            if event.msg_id is not None:
                self._delivered(event)
                self._answered()
            if error is not None:
                self._subscriber_raised(event, error)

        self._invoke(handler, args, report)

    def _subscriber_raised(self, event: PublicationReceived, error: BaseException) -> None:
        log.error("%s: subscriber of %s raised %r", self.url, event.topic, error,
                  exc_info=error)

    def _on_request(self, event: RequestReceived) -> None:
        handler, detail = exposer_call(self.registry, event, self.options.dataframe)
        if handler is None:
            self.conn.respond(event.request_id, *detail)
            return

        def answer(result: Any, error: BaseException | None) -> None:
            status, value = (response_for_error(error) if error is not None
                             else response_for_result(result))
            self.conn.respond(event.request_id, status, value)
            self._answered()

        self._invoke(handler, detail, answer)

    def _invoke(self, handler: Handler, args: tuple[Any, ...], done: Done) -> None:
        """Run a handler: a plain function inline, a coroutine function as a task."""
        try:
            result = handler(*args)
        except Exception as exc:
            done(None, exc)
            return
        if type(result) in PLAIN_TYPES or not inspect.isawaitable(result):
            done(result, None)
            return
        self._spawn(result, done)


def _awaited(awaitable: Awaitable[Any]) -> Awaitable[Any]:
    """A handler whose result is ``awaitable``: :meth:`AsyncCommands._invoke` awaits it."""
    return awaitable


__all__ = ["AsyncCommands", "Done"]
