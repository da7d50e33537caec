"""``rembus.sync`` acknowledges a QoS1/QoS2 message only after its handler returned.

A subscriber process (a named ``rembus.sync`` component, retroactive) handles
messages until one blocks its handler; the messages behind it wait in its
subscriber thread. The process is killed with SIGKILL, then started again: the
messages whose handler had not returned are delivered again (QoS1 at least
once, QoS2 exactly once), those handled before the kill are not (QoS2).
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections import Counter

import pytest

import rembus.sync
from broker_process import BrokerProcess, Process

pytestmark = pytest.mark.timeout(120)

#: The subscriber: prints each message its handler returned from; blocks on ``block_at``.
SUBSCRIBER = textwrap.dedent("""
    import sys, threading
    import rembus.sync as rembus

    url, block_at = sys.argv[1], int(sys.argv[2])
    rb = rembus.component(url)
    lock = threading.Lock()

    def say(*words):  # one line at a time: the subscriber and main threads both print
        with lock:
            print(*words, flush=True)

    def numbers(n):
        if n == block_at:
            say("blocked", n)
            threading.Event().wait()  # until the process is killed
        say("handled", n)

    rb.subscribe(numbers, retroactive=True)
    rb.expose(lambda: "pong", topic="ping")  # runs on the handler pool, not the lane
    say("ready")
    rb.forever()
""")

COUNT = 10
BLOCK_AT = 3


def _subscriber(broker: BrokerProcess, block_at: int) -> Process:
    sub = Process([sys.executable, "-c", SUBSCRIBER, f"{broker.url}/crash_sub", str(block_at)],
                  dict(os.environ))
    return sub


def _handled(output: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in output if line.startswith("handled ")]


@pytest.mark.parametrize("qos", [1, 2])
def test_a_message_whose_handler_did_not_return_comes_back_after_kill_9(
        qos: int, broker_process: BrokerProcess) -> None:
    with rembus.sync.component(f"{broker_process.url}/crash_pub") as pub:
        with _subscriber(broker_process, BLOCK_AT) as sub:
            sub.wait_for("^ready")
            for n in range(COUNT):
                pub.publish("numbers", n, qos=qos)
            sub.wait_for(f"^blocked {BLOCK_AT}")
            # The request reaches the subscriber after every message published
            # before it: when it is answered, all of them are in its subscriber
            # thread's queue, and what it acknowledged has reached the broker.
            assert pub.rpc("ping") == "pong"
            sub.stop(signal.SIGKILL)
            first = _handled(sub.output + sub.rest().splitlines())
        assert first == list(range(BLOCK_AT))
        with _subscriber(broker_process, -1) as again:  # replays before "ready"
            # The last replayed message and the end of the start-up (``ping`` exposed),
            # in either order: the replay can be handled before ``expose`` returns.
            waiting = {"ready", f"handled {COUNT - 1}"}
            while waiting:
                waiting.discard(again.wait_for(f"^({'|'.join(waiting)})$").strip())
            assert pub.rpc("ping") == "pong"  # a late copy would have arrived by now
            again.stop()
            second = _handled(again.output + again.rest().splitlines())
    counts = Counter(first + second)
    assert set(counts) == set(range(COUNT))  # nothing lost
    assert second[: COUNT - BLOCK_AT] == list(range(BLOCK_AT, COUNT))  # in order, once more
    if qos == 2:
        assert all(times == 1 for times in counts.values()), counts
