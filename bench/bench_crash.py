"""Delivery across broker crashes: kill -9 the broker during QoS streams, count the damage.

Run: python bench/bench_crash.py [--kills 10] [--messages 2000] [--qos 0,1,2]

A ``rembus broker`` subprocess is killed with SIGKILL at random moments while
a publisher streams numbered messages on several topics to named retroactive
subscribers, then restarted on the same port and data dir. Two modes:

live     the subscribers stay connected (and reconnect after each kill);
offline  the subscribers are away during the stream and come back after it.

The publisher treats a publish that fails (timeout, connection lost) as not
acknowledged and sends the same number again, so a QoS1/2 message counts as
published once the broker acknowledged it. Prints, per QoS and mode: kills,
messages acknowledged, lost (acknowledged, never delivered), duplicates
(delivered more than once to a handler) and reordered (delivered after a
higher number of the same publisher and topic). QoS0 promises nothing across
a crash; its row shows what it does. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import rembus
from rembus.errors import RembusError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from behaviour_drivers import BrokerProcess

TOPICS = ("crash_a", "crash_b", "crash_c")
WAIT = 60.0  # bound of the wait for the last deliveries


@dataclass
class Tally:
    acked: dict[str, set[int]] = field(default_factory=lambda: {t: set() for t in TOPICS})
    got: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in TOPICS})

    def published(self) -> int:
        return sum(len(s) for s in self.acked.values())

    def row(self) -> tuple[int, int, int, int]:
        acked = sum(len(s) for s in self.acked.values())
        lost = sum(len(self.acked[t] - set(self.got[t])) for t in TOPICS)
        dups = sum(n - 1 for t in TOPICS for n in Counter(self.got[t]).values() if n > 1)
        reordered = 0
        for t in TOPICS:
            top = -1
            for seq in self.got[t]:
                if seq < top:
                    reordered += 1
                top = max(top, seq)
        return acked, lost, dups, reordered


async def subscriber(url: str, name: str, tally: Tally) -> rembus.Component:
    comp = await rembus.component(f"{url}/{name}")
    for topic in TOPICS:
        def handler(seq: int, topic: str = topic) -> None:
            tally.got[topic].append(seq)
        await comp.subscribe(handler, retroactive=True, topic=topic)
    return comp


async def publish_all(url: str, qos: int, messages: int, tally: Tally) -> None:
    pub = await rembus.component(url)
    try:
        for seq in range(messages):
            topic = TOPICS[seq % len(TOPICS)]
            while True:
                try:
                    await asyncio.wait_for(pub.publish(topic, seq, qos=qos), 10.0)
                except (RembusError, TimeoutError, OSError):
                    continue  # not acknowledged: send the same number again
                tally.acked[topic].add(seq)
                break
    finally:
        with contextlib.suppress(RembusError, OSError):
            await pub.close()


async def killer(broker: BrokerProcess, kills: int, messages: int, tally: Tally,
                 stop: asyncio.Event, rng: random.Random) -> int:
    """Kill the broker when the stream passes each of ``kills`` random points."""
    points = sorted(rng.sample(range(1, messages), min(kills, messages - 1)))
    done = 0
    for point in points:
        while tally.published() < point and not stop.is_set():
            await asyncio.sleep(0.001)
        if stop.is_set():
            break
        broker.kill()
        await asyncio.to_thread(broker.start)  # same port and data dir
        done += 1
    return done


async def settle(tally: Tally) -> None:
    """Wait until no delivery arrives for a while (bounded)."""
    deadline = time.monotonic() + WAIT
    last = -1
    while time.monotonic() < deadline:
        count = sum(len(v) for v in tally.got.values())
        if count == last:
            return
        last = count
        await asyncio.sleep(2.0)


async def run(qos: int, mode: str, kills: int, messages: int, seed: int) -> tuple[int, ...]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp))
        await asyncio.to_thread(broker.start)
        tally = Tally()
        name = f"crash_sub_{os.getpid()}_{qos}_{mode}"
        try:
            sub = await subscriber(broker.url, name, tally)
            if mode == "offline":
                await sub.close()
            stop = asyncio.Event()
            kill_task = asyncio.create_task(killer(broker, kills, messages, tally, stop, rng))
            await publish_all(broker.url, qos, messages, tally)
            stop.set()
            done = await kill_task
            if mode == "offline":
                sub = await subscriber(broker.url, name, tally)
            await settle(tally)
            with contextlib.suppress(RembusError, OSError):
                await sub.close()
        finally:
            broker.stop()
    return (done, *tally.row())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="kills per run (default 10)")
    parser.add_argument("--messages", type=int, default=2000,
                        help="messages per run (default 2000)")
    parser.add_argument("--qos", default="0,1,2", help="QoS levels (default 0,1,2)")
    parser.add_argument("--modes", default="live,offline", help="default live,offline")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{'qos':>3} {'mode':>8} {'kills':>6} {'acked':>7} {'lost':>6} {'dups':>6} "
          f"{'reordered':>9}")
    for qos in (int(q) for q in args.qos.split(",")):
        for mode in args.modes.split(","):
            row = await run(qos, mode, args.kills, args.messages, args.seed)
            print(f"{qos:>3} {mode:>8} " + " ".join(f"{v:>{w}}" for v, w in
                                                     zip(row, (6, 7, 6, 6, 9), strict=True)),
                  flush=True)


if __name__ == "__main__":
    asyncio.run(main())
