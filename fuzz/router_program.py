"""The program both router harnesses run: steps on three connections, read from the input.

Each step picks a connection and an action (a frame, a disconnect, a
reconnect, time passing, a drain, a restart of the router on its store);
after each step the driver's turn runs as the server runs it (data requests
answered, twins staged, the store committed, output taken, orders carried
out). Only ProtocolError may escape ``Router.receive``; nothing else may
raise, and no connection may be closed with 1011 (a failure handling a
message).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import rembus_proto as rp
from rembus_proto.broker import CLOSE_INTERNAL_ERROR, Close, Router, answer_requests
from rembus_proto.security_port import MemorySecurity
from rembus_proto.store import MemoryStore


def run(fdp: Any, seeds: Sequence[bytes], new_router: Callable[[], Router],
        store: MemoryStore, security: MemorySecurity) -> None:
    """Run the program that ``fdp`` (an atheris FuzzedDataProvider) spells."""
    router = new_router()
    now = 1000.0
    conns = [router.connect(now) for _ in range(3)]
    for _ in range(fdp.ConsumeIntInRange(1, 40)):
        slot = fdp.ConsumeIntInRange(0, 2)
        action = fdp.ConsumeIntInRange(0, 9)
        if action <= 5:
            frame = (seeds[fdp.ConsumeIntInRange(0, len(seeds) - 1)] if action < 4
                     else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)))
            try:
                router.receive(conns[slot], frame, now)
            except rp.ProtocolError:
                router.disconnect(conns[slot], now)
                conns[slot] = router.connect(now)
        elif action == 6:
            router.disconnect(conns[slot], now)
            conns[slot] = router.connect(now)
        elif action == 7:
            now += fdp.ConsumeIntInRange(0, 5)
            router.handle_timer(now)
        elif action == 8:
            router.drained(conns[slot], now)
        else:
            router.shutdown(now)
            router = new_router()
            conns = [router.connect(now) for _ in range(3)]
        orders = answer_requests(router, store, security, now)
        router.flush()
        store.commit()
        for _conn, _frames in router.data_to_send():
            pass
        for order in orders:
            if isinstance(order, Close):
                if order.code == CLOSE_INTERNAL_ERROR:
                    raise AssertionError(order.reason)
                router.disconnect(order.conn, now)
                if order.conn in conns:
                    conns[conns.index(order.conn)] = router.connect(now)
