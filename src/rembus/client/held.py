"""Publications kept for a handler being set up, un-acknowledged, in arrival order.

A named component that comes back turns delivery on with its first
``subscribe``; the broker then replays the backlog of every retroactive topic
at once, before the application registered the other handlers. Those
messages wait here (bounded) until ``subscribe`` registers their topic.
"""

from __future__ import annotations

from collections import deque

from rembus_proto.client_events import PublicationReceived


class HeldMessages:
    """Publications of topics without a handler, per topic, at most ``budget`` in all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._by_topic: dict[str, deque[PublicationReceived]] = {}
        self._ids: set[bytes] = set()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def hold(self, event: PublicationReceived) -> bool:
        """Keep ``event``; ``False`` (not kept) when ``budget`` messages are already held.

        A copy the broker sent again (same id) of a message already held is
        not kept twice.
        """
        msg_id = event.msg_id
        if msg_id is not None and msg_id in self._ids:
            return True
        if self._count >= self.budget:
            return False
        queue = self._by_topic.get(event.topic)
        if queue is None:
            queue = self._by_topic[event.topic] = deque()
        queue.append(event)
        if msg_id is not None:
            self._ids.add(msg_id)
        self._count += 1
        return True

    def take(self, topic: str) -> list[PublicationReceived]:
        """Remove and return the messages held for ``topic``, oldest first."""
        queue = self._by_topic.pop(topic, None)
        if not queue:
            return []
        self._forget(queue)
        return list(queue)

    def take_all(self) -> list[PublicationReceived]:
        """Remove and return every held message."""
        events = [event for queue in self._by_topic.values() for event in queue]
        self._by_topic.clear()
        self._ids.clear()
        self._count = 0
        return events

    def _forget(self, events: deque[PublicationReceived]) -> None:
        self._count -= len(events)
        for event in events:
            if event.msg_id is not None:
                self._ids.discard(event.msg_id)


__all__ = ["HeldMessages"]
