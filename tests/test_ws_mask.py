"""Every masking route of rembus_proto.wsmask against a byte-by-byte reference."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rembus_proto import wsmask

np = pytest.importorskip("numpy")  # the optional fast path; the others run without it

keys = st.binary(min_size=4, max_size=4)
# Sizes around the switch from big-int XOR to the large routes, around 4-byte word
# boundaries (numpy XORs whole words, then up to 3 bytes one by one), and at random.
sizes = st.one_of(
    st.integers(0, 9),
    st.integers(120, 136),  # short payloads build the key by multiplication below 128
    st.integers(wsmask.INT_MASK_LIMIT - 5, wsmask.INT_MASK_LIMIT + 5),
    st.integers(0, 20_000),
    st.sampled_from([65_535, 65_536, 65_537]),
)


def reference(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    n = draw(sizes)
    seed = draw(st.binary(min_size=1, max_size=64))
    return (seed * (n // len(seed) + 1))[:n]


@pytest.fixture
def numpy_state() -> Iterator[None]:
    """Put the numpy switch back as it was (on: this module imported numpy)."""
    yield
    wsmask.use_numpy(True)


@settings(deadline=None)
@given(payloads(), keys, st.binary(max_size=15))
def test_every_route_matches_the_reference(data: bytes, key: bytes, head: bytes) -> None:
    expected = reference(data, key)
    assert wsmask.mask_small(data, key) == expected
    for route in (wsmask.mask_in_place_python,
                  lambda b, k, at: wsmask.mask_in_place_numpy(b, k, np, at)):
        buf = bytearray(head + data)  # bytes before ``start`` stay as they are
        route(buf, key, len(head))
        assert buf == head + expected


@pytest.mark.parametrize("enabled", [True, False])
def test_mask_with_and_without_numpy(numpy_state: None, enabled: bool) -> None:
    assert wsmask.use_numpy(enabled) is enabled

    @settings(deadline=None)
    @given(data=payloads(), key=keys)
    def check(data: bytes, key: bytes) -> None:
        masked = wsmask.mask(data, key)
        assert masked == reference(data, key)
        assert isinstance(masked, bytes)
        assert wsmask.mask(masked, key) == data

    check()


def test_the_numpy_route_is_taken_only_when_enabled(monkeypatch: pytest.MonkeyPatch,
                                                     numpy_state: None) -> None:
    calls: list[int] = []
    real = wsmask.mask_in_place_numpy

    def spy(buf: bytearray, key: bytes, module: object, start: int) -> None:
        calls.append(len(buf))
        real(buf, key, np, start)

    monkeypatch.setattr(wsmask, "mask_in_place_numpy", spy)
    data = bytes(range(256)) * 40
    wsmask.use_numpy(False)
    wsmask.mask(data, b"abcd")
    assert calls == []
    wsmask.use_numpy(True)
    wsmask.mask(data, b"abcd")
    assert calls == [len(data)]
