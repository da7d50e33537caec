"""One synchronous face for the four drivers, so each behaviour test is written once.

A test gets a :class:`Session` for one driver and makes components with it;
every component answers the same calls (``publish``, ``rpc``, ...), whatever
drives it underneath:

* ``async`` and ``httpx``: :mod:`rembus.client.aio` components on an event loop that a
  helper thread runs; each call waits for its coroutine there;
* ``sync``: :mod:`rembus.sync` components, called directly;
* ``blocking``: :mod:`rembus.blocking` components, each pumped by a small
  selector loop of its own (``fileno``/``want_write``/``next_deadline`` +
  ``process(0)``) that takes turns with the test through a lock;
* ``trio``: :mod:`rembus.anyio` components on trio, which a helper thread runs
  (an anyio blocking portal); each component's ``async with`` block is entered there.

The few handler kinds that differ by nature between drivers (one that waits
for an Event, one that calls back into its own component) are made by the
face; plain handlers are shared.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread

import rembus
import rembus.anyio
import rembus.blocking
import rembus.sync
from rembus.broker.server import Broker, BrokerConfig

DRIVERS = ("async", "sync", "blocking", "httpx", "trio")
#: A safety net against hangs, never a timing threshold: waits end on events.
WAIT = 30.0


class Collector:
    """A handler that records what it gets; tests wait for a count of calls."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, *args: Any) -> None:
        with self._cond:
            self.items.append(args[0] if len(args) == 1 else args)
            self._cond.notify_all()

    def wait_for(self, count: int) -> list[Any]:
        """Wait until ``count`` calls arrived; return the items."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, WAIT):
                raise AssertionError(f"got {len(self.items)} of {count}: {self.items!r}")
            return list(self.items)

    def wait_until(self, last: Any) -> list[Any]:
        """Wait until ``last`` was received; return the items."""
        with self._cond:
            if not self._cond.wait_for(lambda: last in self.items, WAIT):
                raise AssertionError(f"no {last!r} among {self.items!r}")
            return list(self.items)


class LoopThread:
    """An asyncio loop on a helper thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.submit(coro).result(WAIT)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()


# -- components ---------------------------------------------------------------


class Face:
    """What a test calls; each driver's subclass forwards to its component."""

    driver: str
    comp: Any

    @property
    def name(self) -> str | None:
        return self.comp.name  # type: ignore[no-any-return]

    @property
    def is_connected(self) -> bool:
        return bool(self.comp.is_connected)

    def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def publish(self, topic: Any, *args: Any, qos: int = 0) -> None:
        self._do("publish", topic, *args, qos=qos)

    def subscribe(self, fn: Any, retroactive: bool = False, *, topic: str | None = None) -> None:
        self._do("subscribe", fn, retroactive, topic=topic)

    def unsubscribe(self, fn_or_topic: Any) -> None:
        self._do("unsubscribe", fn_or_topic)

    def expose(self, fn: Any, *, topic: str | None = None) -> None:
        self._do("expose", fn, topic=topic)

    def unexpose(self, fn_or_topic: Any) -> None:
        self._do("unexpose", fn_or_topic)

    def rpc(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        return self._do("rpc", method, *args, timeout=timeout)

    def direct(self, target: str, method: str, *args: Any, timeout: float | None = None) -> Any:
        return self._do("direct", target, method, *args, timeout=timeout)

    def admin(self, topic: str, command: dict[str, Any]) -> Any:
        return self._do("admin", topic, command)

    def reactive(self) -> None:
        self._do("reactive")

    def unreactive(self) -> None:
        self._do("unreactive")

    def close(self, timeout: float | None = None) -> int:
        """Close the component; return how many publications it dropped."""
        raise NotImplementedError

    def start_rpc(self, method: str, *args: Any) -> Callable[[], Any]:
        """Send an RPC; the returned function waits for its result (or raises)."""
        raise NotImplementedError

    def start_publish(self, topic: str, *args: Any, qos: int) -> Callable[[], Any]:
        """Publish from a helper thread; the returned function waits for the outcome."""
        return _in_thread(lambda: self.publish(topic, *args, qos=qos))

    @property
    def dropped_messages(self) -> int:
        return int(self.comp.dropped_messages)

    def rpc_many(self, method: str, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Make all calls at once (as concurrently as the driver allows); results in order."""
        raise NotImplementedError

    def expose_waiting(self, topic: str, release: threading.Event) -> None:
        """Expose a handler that answers only once ``release`` is set."""
        raise NotImplementedError

    def expose_calling(self, topic: str, method: str) -> None:
        """Expose a handler that calls ``method`` with its args on this same component."""
        raise NotImplementedError


class AioFace(Face):
    def __init__(self, loop: LoopThread, comp: rembus.Component, driver: str) -> None:
        self.loop, self.comp, self.driver = loop, comp, driver

    def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.loop.run(getattr(self.comp, method)(*args, **kwargs))

    def close(self, timeout: float | None = None) -> int:
        return self.loop.run(self.comp.close(timeout))  # type: ignore[no-any-return]

    def start_rpc(self, method: str, *args: Any) -> Callable[[], Any]:
        future = self.loop.submit(self.comp.rpc(method, *args))
        return lambda: future.result(WAIT)

    def rpc_many(self, method: str, calls: list[tuple[Any, ...]]) -> list[Any]:
        async def gather() -> list[Any]:
            return await asyncio.gather(*(self.comp.rpc(method, *args) for args in calls))

        return self.loop.run(gather())  # type: ignore[no-any-return]

    def expose_waiting(self, topic: str, release: threading.Event) -> None:
        async def waiting(*args: Any) -> str:
            await asyncio.to_thread(release.wait)
            return "released"

        self._do("expose", waiting, topic=topic)

    def expose_calling(self, topic: str, method: str) -> None:
        comp = self.comp

        async def calling(*args: Any) -> Any:
            return await comp.rpc(method, *args)

        self._do("expose", calling, topic=topic)


class SyncFace(Face):
    driver = "sync"

    def __init__(self, comp: rembus.sync.Component) -> None:
        self.comp = comp

    def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.comp, method)(*args, **kwargs)

    def close(self, timeout: float | None = None) -> int:
        return self.comp.close(timeout)

    def start_rpc(self, method: str, *args: Any) -> Callable[[], Any]:
        return _in_thread(lambda: self.comp.rpc(method, *args))

    def rpc_many(self, method: str, calls: list[tuple[Any, ...]]) -> list[Any]:
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            return list(pool.map(lambda args: self.comp.rpc(method, *args), calls))

    def expose_waiting(self, topic: str, release: threading.Event) -> None:
        def waiting(*args: Any) -> str:
            release.wait()
            return "released"

        self.comp.expose(waiting, topic=topic)

    def expose_calling(self, topic: str, method: str) -> None:
        comp = self.comp
        self.comp.expose(lambda *args: comp.rpc(method, *args), topic=topic)


class BlockingFace(Face):
    """A blocking component in a custom selector loop on its own thread."""

    driver = "blocking"

    def __init__(self, comp: rembus.blocking.Component) -> None:
        self.comp = comp
        self.lock = threading.RLock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        comp = self.comp
        while not self._stop:
            with self.lock:
                fd = comp.fileno()
                writing = comp.want_write()
                deadline = comp.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            readers: list[Any] = [self._wake_r]
            if fd >= 0:
                readers.append(fd)
            # OSError, ValueError: the socket changed under us (closed, reconnected).
            with contextlib.suppress(OSError, ValueError):
                select.select(readers, [fd] if writing and fd >= 0 else [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
            with self.lock:
                if self._stop:
                    return
                comp.process(0)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            with self.lock:
                return getattr(self.comp, method)(*args, **kwargs)
        finally:
            self._wake()

    def close(self, timeout: float | None = None) -> int:
        self._stop = True
        self._wake()
        self._thread.join(WAIT)
        dropped = self.comp.close(timeout)
        self._wake_r.close()
        self._wake_w.close()
        return dropped

    def start_rpc(self, method: str, *args: Any) -> Callable[[], Any]:
        reply = self._do("rpc_nowait", method, *args)

        def result() -> Any:
            with self.lock:
                return reply.result()

        return result

    def rpc_many(self, method: str, calls: list[tuple[Any, ...]]) -> list[Any]:
        with self.lock:
            replies = [self.comp.rpc_nowait(method, *args) for args in calls]
            return [reply.result() for reply in replies]

    def expose_waiting(self, topic: str, release: threading.Event) -> None:
        def waiting(*args: Any) -> str:
            release.wait()
            return "released"

        self._do("expose", waiting, topic=topic)

    def expose_calling(self, topic: str, method: str) -> None:
        comp = self.comp
        self._do("expose", lambda *args: comp.rpc(method, *args), topic=topic)


class AnyioFace(Face):
    """A :mod:`rembus.anyio` component whose ``async with`` block a portal thread holds."""

    driver = "trio"

    def __init__(self, portal: anyio.from_thread.BlockingPortal, url: str | None,
                 options: dict[str, Any]) -> None:
        self.portal = portal
        self._block = portal.wrap_async_context_manager(rembus.anyio.component(url, **options))
        self.comp = self._block.__enter__()
        self._open = True

    def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(functools.partial(getattr(self.comp, method), *args, **kwargs))

    def close(self, timeout: float | None = None) -> int:
        dropped = self.portal.call(self.comp.close, timeout)
        if self._open:
            self._open = False
            self._block.__exit__(None, None, None)
        return int(dropped)

    def start_rpc(self, method: str, *args: Any) -> Callable[[], Any]:
        future = self.portal.start_task_soon(functools.partial(self.comp.rpc, method, *args))
        return lambda: future.result(WAIT)

    def rpc_many(self, method: str, calls: list[tuple[Any, ...]]) -> list[Any]:
        comp = self.comp

        async def gather() -> list[Any]:
            results: list[Any] = [None] * len(calls)

            async def one(i: int, args: tuple[Any, ...]) -> None:
                results[i] = await comp.rpc(method, *args)

            async with anyio.create_task_group() as tasks:
                for i, args in enumerate(calls):
                    tasks.start_soon(one, i, args)
            return results

        return self.portal.call(gather)

    def expose_waiting(self, topic: str, release: threading.Event) -> None:
        async def waiting(*args: Any) -> str:
            await anyio.to_thread.run_sync(release.wait, abandon_on_cancel=True)
            return "released"

        self._do("expose", waiting, topic=topic)

    def expose_calling(self, topic: str, method: str) -> None:
        comp = self.comp

        async def calling(*args: Any) -> Any:
            return await comp.rpc(method, *args)

        self._do("expose", calling, topic=topic)


def _in_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return lambda: future.result(WAIT)


# -- sessions -----------------------------------------------------------------


class Session:
    """Components of one driver against one broker; closes them all at the end."""

    def __init__(self, driver: str, url: str) -> None:
        self.driver = driver
        self.url = url
        self.faces: list[Face] = []
        self._loop = LoopThread() if driver in ("async", "httpx") else None
        self._portal_block = (anyio.from_thread.start_blocking_portal("trio")
                              if driver == "trio" else None)
        self._portal = (self._portal_block.__enter__()
                        if self._portal_block is not None else None)

    def component(self, name: str | None = None, **options: Any) -> Face:
        """A component named ``name`` (anonymous when ``None``) at the session's broker."""
        url = f"{self.url}/{name}" if name else self.url
        face = self._connect(url, options)
        self.faces.append(face)
        return face

    def connect_raw(self, url: str | None, **options: Any) -> Face:
        """A component for an arbitrary URL argument (to check errors)."""
        return self._connect(url, options)

    def _connect(self, url: str | None, options: dict[str, Any]) -> Face:
        if self._loop is not None:
            if self.driver == "httpx":
                options.setdefault("transport", "httpx")
            comp = self._loop.run(rembus.component(url, **options))
            return AioFace(self._loop, comp, self.driver)
        if self.driver == "sync":
            return SyncFace(rembus.sync.component(url, **options))
        if self._portal is not None:
            return AnyioFace(self._portal, url, options)
        return BlockingFace(rembus.blocking.component(url, **options))

    def close(self) -> None:
        for face in reversed(self.faces):
            with contextlib.suppress(Exception):
                face.close()
        self.faces.clear()
        if self._loop is not None:
            self._loop.stop()
        if self._portal_block is not None:
            self._portal_block.__exit__(None, None, None)


# -- brokers ------------------------------------------------------------------


@contextlib.contextmanager
def in_process_broker(**config: Any) -> Iterator[str]:
    """A broker on 127.0.0.1 (any free port) on a thread of its own; yields its URL.

    ``config``: more fields of :class:`BrokerConfig` (``ssl_context=``, ...)."""
    loop = LoopThread()
    broker = Broker(BrokerConfig(host="127.0.0.1", port=0, **config))
    try:
        loop.run(broker.start())
        yield broker.url
    finally:
        with contextlib.suppress(Exception):
            loop.run(broker.stop())
        loop.stop()


class BrokerProcess:
    """``python -m rembus broker`` as a child process, restartable on the same port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rembus", "broker", "--host", "127.0.0.1",
             "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "serving ws://" in line:
                self.port = int(line.split("serving ws://", 1)[1].split()[0].rsplit(":", 1)[1])
                return
        raise RuntimeError(f"the broker exited with {self.proc.wait()} before serving")

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): it reads and answers nothing until killed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """Kill the broker with SIGKILL (a crash: nothing is flushed or closed cleanly)."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        proc.kill()
        proc.wait(WAIT)
        if proc.stdout is not None:
            proc.stdout.close()

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
