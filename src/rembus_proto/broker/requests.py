"""In-line answers to the router's data requests, for drivers that read their ports
between two turns (the asyncio broker, the test harness, the fuzzer)."""

from __future__ import annotations

from collections.abc import Callable

from ..security_port import Security
from ..store import Pruned, Store
from .actions import NeedKey, NeedReplay, Order, PruneArchive
from .router import Router

#: Rounds of requests answered in one call: each answer can raise new requests
#: (a found key lets held input go on), but only as many as the held input.
MAX_ROUNDS = 10_000


def answer_requests(router: Router, store: Store, security: Security, now: float,
                    wall: float | None = None, pruned: list[Pruned] | None = None,
                    replay: bool = True, defer_key: Callable[[NeedKey], bool] | None = None
                    ) -> list[Order | NeedReplay]:
    """Answer every data request of ``router`` from ``store`` and ``security``, and
    prune the archive when asked (what goes is added to ``pruned``); return the
    other orders (closes, shutdown).

    ``replay=False``: replay requests are not read from ``store`` but returned
    with the orders (a cluster's archive answers them later).
    ``defer_key(request)`` may take a key lookup over (true): it then answers it
    later with :meth:`Router.key_found` (a cluster reads a key it has not seen yet).
    """
    orders: list[Order | NeedReplay] = []
    for _ in range(MAX_ROUNDS):
        events = router.events()
        if not events:
            break
        for event in events:
            if isinstance(event, NeedReplay) and not replay:
                orders.append(event)
            elif isinstance(event, NeedReplay):
                batch = store.replay(event.after_seq, event.topics, event.limit,
                                     event.max_bytes)
                router.replay_batch(event, batch, now, wall)
            elif isinstance(event, NeedKey):
                if defer_key is not None and defer_key(event):
                    continue
                router.key_found(event.conn, event.name, security.public_key(event.name), now,
                                 wall)
            elif isinstance(event, PruneArchive):
                store.prune(event.before_ns, event.max_per_topic, pruned,
                            max_topic_bytes=event.max_topic_bytes,
                            max_total_bytes=event.max_total_bytes)
            else:
                orders.append(event)
    return orders


__all__ = ["MAX_ROUNDS", "answer_requests"]
