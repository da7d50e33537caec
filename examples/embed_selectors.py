"""Drive a rembus.blocking component from your own ``selectors`` loop.

The loop belongs to the application: it also runs a timer of its own (a
heartbeat published every ``TICK`` seconds). The component only says what to
wait for: its socket (:meth:`fileno`, for writing too while :meth:`want_write`)
and its next deadline (:meth:`next_deadline`); ``process(0)`` then does what
is due and runs the handlers inline.

Run a broker first, then: python examples/embed_selectors.py [messages]
It serves ``add(x, y)``, prints every message on ``temperature`` and exits after
``messages`` of them (default: runs until Ctrl-C).
"""

from __future__ import annotations

import selectors
import sys
import time

import rembus.blocking

TICK = 0.2  # seconds between two heartbeats of the application's own timer


def main(limit: int | None) -> None:
    received: list[float] = []

    def temperature(room: str, value: float) -> None:
        received.append(value)
        print(f"{room}: {value}", flush=True)

    def add(x: float, y: float) -> float:
        return x + y

    rb = rembus.blocking.component("embed_selectors")
    sel = selectors.DefaultSelector()
    try:
        rb.expose(add)
        rb.subscribe(temperature)
        print("ready", flush=True)
        beats = 0
        next_beat = time.monotonic()
        while limit is None or len(received) < limit:
            # What to wait for is asked again on every turn: the socket may have
            # changed (reconnect), and output may wait for it to be writable.
            for key in list(sel.get_map().values()):
                sel.unregister(key.fileobj)
            fd = rb.fileno()
            if fd >= 0:
                events = selectors.EVENT_READ
                if rb.want_write():
                    events |= selectors.EVENT_WRITE
                sel.register(fd, events)
            deadline = rb.next_deadline()
            wake = next_beat if deadline is None else min(next_beat, deadline)
            if fd >= 0:
                sel.select(max(0.0, wake - time.monotonic()))
            else:
                time.sleep(max(0.0, wake - time.monotonic()))  # no socket: wait for a timer
            rb.process(0)
            if time.monotonic() >= next_beat:  # the application's own timer
                beats += 1
                rb.publish("heartbeat", beats)
                next_beat = time.monotonic() + TICK
    except KeyboardInterrupt:
        pass
    finally:
        sel.close()
        rb.close()
    print(f"done after {len(received)} messages", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
