"""Run the PyPI ``rembus==0.8.23`` broker (the code of its ``brokerd`` command) for tests.

Upstream listens on ``0.0.0.0`` and a fixed port; here its WebSocket server
is bound to ``127.0.0.1`` and the port given as argument (default: one the
system chooses), and the line ``serving ws://127.0.0.1:PORT`` is printed once
it listens. The broker stops on SIGTERM (brokerd's own handler) or when stdin
closes (then it stops listening before anything else), so it cannot outlive
the test run that started it. Configuration comes from the environment, as
for ``brokerd`` (``REMBUS_DIR``, ``REMBUS_LOG``...).

Upstream replays stored messages to a returning subscriber from its DuckLake
tables only, which a background task fills about once a second; the line
``archived N`` is printed each time N messages reach them, so that a test
can wait for that instead of sleeping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from typing import Any

import rembus.brokerd as brokerd
import rembus.db as upstream_db
import rembus.router as upstream_router

_upstream_serve = upstream_router.serve
_PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 0
_listening: list[tuple[asyncio.AbstractEventLoop, Any]] = []


class _LocalServe:
    """``websockets.asyncio.server.serve`` on 127.0.0.1:0, announcing the port."""

    def __init__(self, handler: Any, host: str, port: int, **kwargs: Any) -> None:
        self._router = getattr(handler, "__self__", None)
        self._inner = _upstream_serve(handler, "127.0.0.1", _PORT, **kwargs)

    async def __aenter__(self) -> Any:
        server = await self._inner.__aenter__()
        _listening.append((asyncio.get_running_loop(), server))
        port = server.sockets[0].getsockname()[1]
        if self._router is not None:
            self._router.wsport = port
        print(f"serving ws://127.0.0.1:{port}", flush=True)
        return server

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)


_upstream_insert = upstream_db._insert_message_batch


def _announcing_insert(db: Any, router_id: str, msgs: list[Any]) -> Any:
    result = _upstream_insert(db, router_id, msgs)
    print(f"archived {len(msgs)}", flush=True)
    return result


def _stop_when_stdin_closes() -> None:
    sys.stdin.read()
    # stop listening first: upstream's shutdown keeps accepting connections while it
    # closes the others, and a component that reconnects at once would log in again
    for loop, server in _listening:
        loop.call_soon_threadsafe(server.server.close)
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    upstream_router.serve = _LocalServe
    upstream_db._insert_message_batch = _announcing_insert
    os.environ["REMBUS_PORT"] = "1"  # any non-zero value: the real port is chosen above
    threading.Thread(target=_stop_when_stdin_closes, daemon=True).start()
    brokerd.main()
