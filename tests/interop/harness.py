"""Processes and threads of the interop tests: upstream peers and brokers, ours in a thread.

Every wait is bounded by :data:`WAIT`; every process is stopped (killed if
it does not stop) and every thread joined when its ``with`` block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

from upstream import Venv

import rembus
from rembus.broker.server import Broker, BrokerConfig
from rembus_proto.broker import Router
from rembus_proto.client_events import Connected
from rembus_proto.store import MemoryStore

HERE = Path(__file__).resolve().parent
WAIT = 30.0
"""Upper bound of any single wait; upstream request timeouts are 3 s (0.1.0) and 10 s (0.8.23)."""

T = TypeVar("T")


def peer_env(home: Path) -> dict[str, str]:
    """The environment of an upstream process: its own HOME, no proxy, no REMBUS_* settings.

    ``PYTHONPATH`` is dropped too: pointing at our sources, it would make the
    upstream interpreter import our ``rembus`` instead of the release.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REMBUS_", "XDG_")) and "proxy" not in k.lower()
           and k not in ("PYTHONPATH", "PYTHONHOME")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), REMBUS_DIR=str(home / "rembus"), PYTHONUNBUFFERED="1",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _close_stdin(proc: subprocess.Popen[str]) -> None:
    """Tell a driver to finish (it exits at the end of its input)."""
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def _stop(proc: subprocess.Popen[str]) -> None:
    """Close stdin, then SIGTERM, then SIGKILL, each with a bounded wait."""
    _close_stdin(proc)
    for action in (None, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        if action is not None:
            proc.send_signal(action)
        try:
            proc.wait(WAIT / 3)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(WAIT)


class Inbox:
    """Items that arrive from another thread, taken in arrival order by what they match."""

    def __init__(self, label: str, describe: Callable[[], str] = lambda: "") -> None:
        self.label = label
        self._describe = describe
        self._cond = threading.Condition()
        self._items: list[Any] = []
        self._closed = False

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, match: Callable[[Any], bool], what: str, timeout: float = WAIT) -> Any:
        """The oldest item that ``match`` accepts, removed; waits for it."""
        found: list[Any] = []

        def ready() -> bool:
            for index, item in enumerate(self._items):
                if match(item):
                    found.append(self._items.pop(index))
                    return True
            return self._closed

        with self._cond:
            self._cond.wait_for(ready, timeout)
            if found:
                return found[0]
            state = "no more input" if self._closed else f"nothing within {timeout:.0f} s"
        raise AssertionError(f"{self.label}: {what}: {state}\n{self._describe()}")

    def pending(self, match: Callable[[Any], bool]) -> list[Any]:
        """Items received and not taken that ``match`` accepts."""
        with self._cond:
            return [item for item in self._items if match(item)]


def _is_pub(topic: str) -> Callable[[Any], bool]:
    return lambda e: e.get("event") == "pub" and e.get("topic") == topic


def _is_call(topic: str) -> Callable[[Any], bool]:
    return lambda e: e.get("event") == "call" and e.get("topic") == topic


class Received:
    """What a component received, as ``pub`` and ``call`` events in :attr:`inbox`."""

    inbox: Inbox

    def pub(self, topic: str) -> list[Any]:
        """Arguments of the next message received on ``topic``."""
        args: list[Any] = self.inbox.take(_is_pub(topic), f"a message on {topic}")["args"]
        return args

    def served(self, topic: str) -> list[Any]:
        """Arguments of the next call its exposed ``topic`` served."""
        args: list[Any] = self.inbox.take(_is_call(topic), f"a call of {topic}")["args"]
        return args

    def pending_pubs(self, topic: str) -> list[Any]:
        """Messages on ``topic`` received and not taken."""
        return [e["args"] for e in self.inbox.pending(_is_pub(topic))]


class Process:
    """A subprocess whose stdout lines, parsed, arrive in :attr:`inbox`; stderr goes to a file."""

    def __init__(self, cmd: list[str], env: dict[str, str], workdir: Path, label: str,
                 parse: Callable[[str], Any]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.label = label
        self.stderr_path = workdir / f"{label}.stderr"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, env=env, cwd=workdir)
        self.inbox = Inbox(label, lambda: f"--- stderr ---\n{_tail(self.stderr_path)}")

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                try:
                    self.inbox.put(parse(line))
                except ValueError:
                    continue  # stray output of an upstream library
            self.inbox.close()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def finish(self) -> None:
        """Close its stdin, without waiting (see :meth:`close`)."""
        _close_stdin(self.proc)

    def close(self) -> None:
        _stop(self.proc)
        self._reader.join(WAIT)
        self._stderr.close()


class PeerError(AssertionError):
    """An op failed in the upstream peer."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(f"{answer.get('error')}: {answer.get('text')}")
        self.answer = answer
        self.status: int | None = answer.get("status")


class Peer(Process, Received):
    """An upstream component driven through the line protocol of ``peer_common``.

    It does not wait for the driver's ``ready`` line: the peers of a test boot
    in parallel, and a driver reads its first command once it has started.
    """

    def __init__(self, venv: Venv, label: str, workdir: Path) -> None:
        script = HERE / ("peer_010.py" if venv.release.name.endswith("0.1.0") else "peer_0823.py")
        self.home = workdir / f"{label}-home"
        super().__init__([str(venv.python), str(script)], peer_env(self.home), workdir, label,
                         json.loads)
        self._next_id = 0

    def request(self, op: str, timeout: float = WAIT, **args: Any) -> dict[str, Any]:
        """Send an op and return its raw answer."""
        self._next_id += 1
        req_id = self._next_id
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": req_id, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = self.inbox.take(lambda e: e.get("id") == req_id,
                                                 f"answer to {op} {args}", timeout)
        return answer

    def call(self, op: str, timeout: float = WAIT, **args: Any) -> Any:
        """Send an op and return its result; :class:`PeerError` if it failed."""
        answer = self.request(op, timeout, **args)
        if not answer["ok"]:
            raise PeerError(answer)
        return answer["result"]

    def fails(self, op: str, **args: Any) -> tuple[int | None, Any]:
        """Send an op that must fail; returns the upstream status code and message."""
        answer = self.request(op, **args)
        assert not answer["ok"], f"{self.label}: {op} {args} succeeded: {answer['result']!r}"
        return answer.get("status"), answer.get("message")


class UpstreamBroker(Process):
    """The 0.8.23 broker (``brokerd``) on 127.0.0.1, with its data under ``workdir``."""

    def __init__(self, venv: Venv, workdir: Path) -> None:
        self._venv = venv
        self._workdir = workdir
        self.port = 0
        self._starts = 0
        self._start()

    def _start(self) -> None:
        env = peer_env(self._venv.duckdb_home(self._workdir / "broker-home"))
        env["REMBUS_LOG"] = "INFO"
        self._starts += 1
        super().__init__([str(self._venv.python), str(HERE / "broker_0823.py"), str(self.port)],
                         env, self._workdir, f"broker-{self._starts}", str.strip)
        try:
            line = self.inbox.take(lambda text: text.startswith("serving ws://127.0.0.1:"),
                                   "start")
        except BaseException:
            self.close()
            raise
        self.url = line.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self._archived = 0

    def restart(self) -> None:
        """Stop (SIGTERM, as an operator would), then start on the same port and data."""
        self.close()
        self._start()

    def wait_archived(self, total: int) -> None:
        """Wait until ``total`` messages in all were written to the broker's tables."""
        while self._archived < total:
            line = self.inbox.take(lambda text: text.startswith("archived "),
                                   f"{total} messages archived ({self._archived} so far)")
            self._archived += int(line.split()[1])

    def __enter__(self) -> UpstreamBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CliBroker(Process):
    """Our broker as operators run it: ``python -m rembus broker`` with a data dir (SQLite)."""

    def __init__(self, workdir: Path, *options: str) -> None:
        self._workdir = workdir
        self.data_dir = workdir / "data"
        self._options = options
        self.port = 0
        self._starts = 0
        self._start()

    def _start(self) -> None:
        self._starts += 1
        cmd = [sys.executable, "-m", "rembus", "broker", "--host", "127.0.0.1",
               "--port", str(self.port), "--data-dir", str(self.data_dir), *self._options]
        super().__init__(cmd, dict(os.environ), self._workdir, f"rembus-broker-{self._starts}",
                         str.strip)
        try:
            line = self.inbox.take(lambda text: "serving ws://127.0.0.1:" in text, "start")
        except BaseException:
            self.close()
            raise
        self.url = line.split("serving ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    @staticmethod
    def command(data_dir: Path, *args: str) -> str:
        """Run ``rembus broker ARGS --data-dir DATA_DIR`` (tenant, admin...) and return stdout."""
        done = subprocess.run([sys.executable, "-m", "rembus", "broker", *args,
                               "--data-dir", str(data_dir)], capture_output=True, text=True,
                              timeout=WAIT, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean stop saves every twin
        super().close()

    def restart(self) -> None:
        """Stop with SIGTERM, then start on the same port and data dir."""
        self.close()
        self._start()

    def __enter__(self) -> CliBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LoopThread:
    """An asyncio loop in a thread, for our broker and our client while the test blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise AssertionError(f"no result within {timeout:.0f} s") from None

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_rest())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT)
            if not self._thread.is_alive():
                self.loop.close()


class OurBroker:
    """Our broker, in process, on 127.0.0.1 (a free port, kept across restarts)."""

    def __init__(self, loop: LoopThread) -> None:
        self._loop = loop
        self.store = MemoryStore()
        self._changed = threading.Condition()
        self._received = 0
        self.port = 0
        self._start()
        self.url = self.broker.url

    def _start(self) -> None:
        self.broker = Broker(BrokerConfig(host="127.0.0.1", port=self.port), self.store)
        router = self.broker.router
        receive_many = router.receive_many

        def receive_and_notify(*args: Any) -> None:
            try:
                receive_many(*args)
            finally:
                with self._changed:
                    self._received += 1
                    self._changed.notify_all()

        # the server hands the router every batch of messages it reads through receive_many
        router.receive_many = receive_and_notify  # type: ignore[method-assign]
        self._loop.run(self.broker.start())
        self.port = self.broker.port

    def restart(self) -> None:
        """Stop (every connection is closed) and start again on the same port and store."""
        self.close()
        self._start()

    def wait_until(self, condition: Callable[[Router], bool], what: str) -> None:
        """Wait until ``condition(router)`` holds, checked after each message the broker takes."""
        deadline = time.monotonic() + WAIT
        while True:
            with self._changed:
                seen = self._received
            # read the router's state in its own thread
            if self._loop.run(_call(condition, self.broker.router)):
                return
            with self._changed:
                while self._received == seen:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AssertionError(f"our broker: {what}: not within {WAIT:.0f} s")
                    self._changed.wait(left)

    def close(self) -> None:
        self._loop.run(self.broker.stop())


async def _call(condition: Callable[[Router], bool], router: Router) -> bool:
    return condition(router)


class OurClient(Received):
    """Our async client (``rembus.component``) with blocking calls, recording what it receives."""

    def __init__(self, loop: LoopThread, url: str, **options: Any) -> None:
        self._loop = loop
        self.inbox = Inbox(f"our client {url}")
        self.rb = loop.run(rembus.component(url, **options))
        on_event = self.rb._on_event

        def recording(event: object) -> None:
            on_event(event)
            if isinstance(event, Connected):
                self.inbox.put({"event": "connected"})

        self.rb._on_event = recording  # type: ignore[method-assign]

    def reconnected(self) -> None:
        """Wait until it has connected again (it restores its state at once, in order)."""
        self.inbox.take(lambda e: e.get("event") == "connected", "a reconnection")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.rb, name)

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run(method(*args, **kwargs))

        return blocking

    def subscribe_topic(self, topic: str, retroactive: bool = False) -> None:
        def handler(*args: Any) -> None:
            self.inbox.put({"event": "pub", "topic": topic, "args": list(args)})

        self._loop.run(self.rb.subscribe(handler, retroactive, topic=topic))

    def expose_add(self, topic: str) -> None:
        def handler(*args: Any) -> Any:
            self.inbox.put({"event": "call", "topic": topic, "args": list(args)})
            return sum(args)

        self._loop.run(self.rb.expose(handler, topic=topic))

    def close(self) -> None:
        self._loop.run(self.rb.close())


def exchange_with_peer(peer: Peer, mine: OurClient, peer_name: str, mine_name: str,
                       qos_to_peer: int, peer_qos: tuple[int, ...] = (0, 1, 2)) -> list[Any]:
    """Our client and an upstream peer publish to each other and call each other.

    Returns what the peer's publications to us (one per level of ``peer_qos``) delivered.
    """
    peer.call("subscribe", topic="to_peer")
    peer.call("reactive")
    peer.call("expose", topic="peer_add", kind="add")
    mine.subscribe_topic("to_mine")
    mine.expose_add("mine_add")

    mine.publish("to_peer", 1, "a")
    mine.publish("to_peer", {"n": [1.5]}, qos=qos_to_peer)
    assert peer.pub("to_peer") == [1, "a"]
    assert peer.pub("to_peer") == [{"n": [1.5]}]
    for qos in peer_qos:
        peer.call("publish", topic="to_mine", args=[qos], qos=qos)
    received = [mine.pub("to_mine") for _ in peer_qos]

    assert mine.rpc("peer_add", 1, 2) == 3
    assert mine.direct(peer_name, "peer_add", 3, 4) == 7
    assert peer.call("rpc", topic="mine_add", args=[5, 6]) == 11
    assert peer.call("direct", target=mine_name, topic="mine_add", args=[7, 8]) == 15
    assert mine.served("mine_add") == [5, 6]
    return received
