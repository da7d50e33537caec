"""Coverage-guided fuzzing of the broker's Router.

Run: python fuzz/fuzz_router.py -max_total_time=60 [corpus-dir]

The input is a program: each step picks a connection (of three, one of them
with 16-byte ids), an action (a frame, a disconnect, a reconnect, time
passing, a drain) and, for frames, the frame bytes. After each step the
router's data requests are answered in line. Only ProtocolError may escape
Router.receive; every other call must not raise at all, and no connection may
be closed with code 1011 (a failure handling a message).
"""

from __future__ import annotations

import sys

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("atheris is not installed: python -m pip install -e '.[fuzz]'")

with atheris.instrument_imports():
    import router_program

    import rembus_proto as rp
    from rembus_proto.broker import Router, RouterConfig
    from rembus_proto.security_port import MemorySecurity
    from rembus_proto.store import MemoryStore

SEEDS = [
    rp.Identity(b"\x01" * 8, "a").encode(),
    rp.Admin(b"\x02" * 8, "t", {"cmd": "subscribe", "msg_from": float("inf")}).encode(),
    rp.Admin(b"\x03" * 8, "__config__", {"cmd": "reactive", "status": True}).encode(),
    rp.Admin(b"\x04" * 8, "f", {"cmd": "expose"}).encode(),
    rp.Pub("t", rp.Payload.of([1])).encode(),
    rp.Pub("t", rp.Payload.of([1]), b"\x05" * 8, rp.QOS2).encode(),
    rp.Rpc(b"\x06" * 8, "f", rp.Payload.of([1])).encode(),
    rp.Rpc(b"\x07" * 16, "f", rp.Payload.of([1]), "a").encode(),
    rp.Ack(b"\x05" * 8).encode(),
    rp.Ack2(b"\x05" * 8).encode(),
]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    store = MemoryStore()
    security = MemorySecurity()
    config = RouterConfig(max_inflight=8, replay_batch=4, max_queued=64,
                          limits=rp.DecodeLimits(max_message_size=4096, max_depth=32))
    counter = iter(range(1, 1 << 30))

    def ids(n: int) -> bytes:
        return next(counter).to_bytes(n, "little")

    router_program.run(fdp, SEEDS, lambda: Router(store, config, id_factory=ids,
                                                  security=security),
                       store, security)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
