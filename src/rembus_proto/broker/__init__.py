"""The broker's brain, one job per module, behind the :class:`Router` facade.

* :mod:`.state` - connection and twin state
* :mod:`.index` - the subscription index (exact topics, patterns in a segment trie)
* :mod:`.fanout` - publications to subscribers, QoS ACKs
* :mod:`.replay` - the archive sequence and replay of stored messages
* :mod:`.rpc` - RPC routing and load balancing
* :mod:`.admin` - ADMIN commands
* :mod:`.auth` - the :class:`Guard`: authentication and authorization decisions
* :mod:`.sessions` - connections, twins and name binding
* :mod:`.effects` - the one output queue (frames, closes, requests)
* :mod:`.timers` - deadlines of QoS deliveries and forwarded calls, on one heap
* :mod:`.stats` - counters for the metrics and the status page (plain ints, no I/O)
* :mod:`.actions` - the events the driver receives
* :mod:`.router` - the facade; :mod:`.requests` answers data requests in line
* :mod:`.peer` - one WebSocket connection of the broker, in front of the router
"""

from .actions import (
    Close,
    Event,
    NeedKey,
    NeedReplay,
    Order,
    PruneArchive,
    Request,
    ShutdownRequested,
    Skipped,
)
from .auth import BROKER_COMMANDS, SECURITY_COMMANDS, TOPIC_COMMANDS, Guard
from .config import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_OVERWRITTEN,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SLOW_CONSUMER,
    CLOSE_UNAUTHENTICATED,
    POLICIES,
    Policy,
    RouterConfig,
)
from .index import PatternMatcher, RegexMatcher, SubscriptionIndex
from .requests import answer_requests
from .router import Router
from .state import Connection, Twin

__all__ = [
    "BROKER_COMMANDS",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_OVERWRITTEN",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_UNAUTHENTICATED",
    "POLICIES",
    "SECURITY_COMMANDS",
    "TOPIC_COMMANDS",
    "Close",
    "Connection",
    "Event",
    "Guard",
    "NeedKey",
    "NeedReplay",
    "Order",
    "PatternMatcher",
    "Policy",
    "PruneArchive",
    "RegexMatcher",
    "Request",
    "Router",
    "RouterConfig",
    "ShutdownRequested",
    "Skipped",
    "SubscriptionIndex",
    "Twin",
    "answer_requests",
]
