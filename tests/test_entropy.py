"""The pool of random bytes behind ids and mask keys."""

from __future__ import annotations

from rembus_proto.entropy import RandomPool


def test_every_byte_is_handed_out_once() -> None:
    pool = RandomPool()
    draws = [pool(8) for _ in range(2000)]  # spans several refills
    assert all(len(d) == 8 for d in draws)
    assert len(set(draws)) == len(draws)


def test_requests_larger_than_the_chunk() -> None:
    pool = RandomPool()
    pool(4000)
    big = pool(10_000)
    assert len(big) == 10_000 and len(pool(4)) == 4
