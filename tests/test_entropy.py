"""The pool of random bytes behind ids and mask keys."""

from __future__ import annotations

import os

import pytest

from rembus_proto import entropy
from rembus_proto.entropy import RandomPool


def test_every_byte_is_handed_out_once() -> None:
    pool = RandomPool()
    draws = [pool(8) for _ in range(2000)]  # spans several refills
    assert all(len(d) == 8 for d in draws)
    assert len(set(draws)) == len(draws)
    assert len(set(b"".join(draws))) == 256


def test_requests_larger_than_the_chunk() -> None:
    pool = RandomPool()
    pool(4000)
    big = pool(10_000)
    assert len(big) == 10_000 and len(pool(4)) == 4
    # Random bytes, not a constant or a short cycle: 10,000 uniform bytes miss one of
    # the 256 values with a probability below 1e-14.
    assert len(set(big)) == 256
    assert big != pool(10_000)


def test_a_constant_source_fails_these_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entropy.os, "urandom", lambda n: bytes(n))
    for check in (test_every_byte_is_handed_out_once, test_requests_larger_than_the_chunk):
        with pytest.raises(AssertionError):
            check()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_draws_other_bytes_than_its_parent() -> None:
    pool = RandomPool()
    pool(8)  # the pool now holds bytes that both processes would inherit
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its draws and leave at once
        try:
            os.write(write_end, pool(64))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert len(child) == 64
    assert pool(64) != child
