"""The request methods shared by the async drivers (:mod:`rembus.client.aio` on
asyncio, :mod:`rembus.anyio` on anyio): each queues a request on the protocol
core and waits for its outcome the driver's way (:meth:`_wait`)."""

from __future__ import annotations

from typing import Any

from rembus.client.base import ComponentBase
from rembus.client.handlers import Handler


class AsyncCommands(ComponentBase):
    """``rpc``, ``direct``, ``subscribe`` ... of an async component. A driver
    supplies :meth:`_wait` and :meth:`_write_queued`."""

    async def _wait(self, handle: int) -> Any:
        """Write the request of ``handle`` and return its outcome (or raise it)."""
        raise NotImplementedError

    def _write_queued(self) -> None:
        """Write what the core queued; nothing is awaited."""
        raise NotImplementedError

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


__all__ = ["AsyncCommands"]
