"""Message layer cost against the raw CBOR codec (prints figures, asserts nothing).

Run: python bench/bench_messages.py [--seconds 0.2] [--rounds 7]

For each case it times encode + decode (+ reading the arguments, which is
when the lazy payload is decoded) and the same lists through plain
cbor2.dumps/cbor2.loads, interleaved, keeping the best round of each. The
broker case starts from a received frame and ends with the frame to send.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import cbor2

import rembus_proto as rp
from rembus_proto import Payload, Pub, Response, Rpc

ID8 = bytes(range(1, 9))
ARGS = [7, 21.6, "sensor_1"]


def raw_pub() -> object:
    return cbor2.loads(cbor2.dumps([1, "sensor", ARGS]))[2]


def ours_pub() -> object:
    return rp.decode(Pub("sensor", Payload.of(ARGS)).encode()).data.args  # type: ignore[union-attr]


PUB_FRAME = cbor2.dumps([1, "sensor", ARGS])


def raw_pub_forward() -> object:
    # a broker's view: a frame comes in, is decoded to be routed, and goes out again
    return cbor2.dumps(cbor2.loads(PUB_FRAME))


def ours_pub_forward() -> object:
    # the same with the message layer, which keeps the payload bytes as they came
    return rp.decode(PUB_FRAME).encode()


def raw_rpc() -> object:
    req = cbor2.loads(cbor2.dumps([2, ID8, "add", None, [1, 2]]))
    res = cbor2.loads(cbor2.dumps([4, req[1], 0, 3]))
    return res[3]


def ours_rpc() -> object:
    req = rp.decode(Rpc(ID8, "add", Payload.of([1, 2])).encode())
    assert isinstance(req, Rpc)
    _ = req.data.args
    res = rp.decode(Response(req.id, 0, Payload.of(3)).encode())
    assert isinstance(res, Response)
    return res.data.value


def rate(fn: Callable[[], object], seconds: float) -> float:
    count = 0
    batch = 2000
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.2, help="length of one timing round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per case")
    opts = parser.parse_args()
    cases = [
        ("PUB [1, 'sensor', [i, 21.6, 'sensor_1']]", raw_pub, ours_pub),
        ("PUB frame decoded and re-encoded (broker)", raw_pub_forward, ours_pub_forward),
        ("RPC add(1, 2) + RESPONSE 3", raw_rpc, ours_rpc),
    ]
    print(f"{'case':<44}{'cbor2 ops/s':>14}{'rembus ops/s':>14}{'cost ratio':>12}")
    for name, raw, ours in cases:
        best_raw = best_ours = 0.0
        for _ in range(opts.rounds):
            best_raw = max(best_raw, rate(raw, opts.seconds))
            best_ours = max(best_ours, rate(ours, opts.seconds))
        print(f"{name:<44}{best_raw:>14,.0f}{best_ours:>14,.0f}{best_raw / best_ours:>11.2f}x")


if __name__ == "__main__":
    main()
