"""Coverage-guided fuzzing of the broker's Router in authenticated mode (the Guard).

Run: python fuzz/fuzz_router_auth.py -max_total_time=60 [corpus-dir]

As fuzz/fuzz_router.py, but every connection must log in first: two names
are registered ("boss", an admin, and "a"), a tenant takes registrations
with PIN 1234, and a signature is good when it is ``b"good"``, so the fuzzer
can reach the logged-in paths (private topics, authorizations, admin
commands, registrations). Only ProtocolError may escape Router.receive; a
close with code 1011 (a failure handling a message) is a bug too.
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
    from rembus_proto.security_port import ECDSA, MemorySecurity, PublicKey
    from rembus_proto.store import MemoryStore

KEY = PublicKey(b"key", ECDSA)


def _id(n: int) -> bytes:
    return bytes([n]) * 8


SEEDS = [
    rp.Identity(_id(1), "a").encode(),
    rp.Identity(_id(1), "boss").encode(),
    rp.Attestation(_id(2), "a", b"good").encode(),
    rp.Attestation(_id(2), "boss", b"good").encode(),
    rp.Attestation(_id(2), "a", b"bad").encode(),
    rp.Register(_id(3), "b", "1234", b"key", 2).encode(),
    rp.Register(_id(3), "c", "0000", b"key", 2).encode(),
    rp.Unregister(_id(4)).encode(),
    rp.Admin(_id(5), "t", {"cmd": "private_topic"}).encode(),
    rp.Admin(_id(5), "t", {"cmd": "authorize", "cid": "a"}).encode(),
    rp.Admin(_id(5), "t", {"cmd": "unauthorize", "cid": "a"}).encode(),
    rp.Admin(_id(5), "t", {"cmd": "public_topic"}).encode(),
    rp.Admin(_id(5), "t", {"cmd": "subscribe", "msg_from": float("inf")}).encode(),
    rp.Admin(_id(5), "__config__", {"cmd": "setup", "exposers": ["f"],
                                    "subscribers": ["t"]}).encode(),
    rp.Admin(_id(5), "__config__", {"cmd": "broker_config"}).encode(),
    rp.Admin(_id(5), "f", {"cmd": "expose"}).encode(),
    rp.Pub("t", rp.Payload.of([1])).encode(),
    rp.Pub("t", rp.Payload.of([1]), _id(6), rp.QOS2).encode(),
    rp.Rpc(_id(7), "f", rp.Payload.of([1])).encode(),
    rp.Rpc(_id(8), "f", rp.Payload.of([1]), "a").encode(),
    rp.Ack(_id(6)).encode(),
]


def _verify(key: PublicKey, signed: bytes, signature: bytes) -> bool:
    return signature == b"good"


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    store = MemoryStore()
    security = MemorySecurity(tenants={".": "1234"}, admins=["boss"],
                              keys={"a": KEY, "boss": KEY})
    config = RouterConfig(authenticated=True, max_inflight=8, replay_batch=4, max_queued=64,
                          max_held=16, limits=rp.DecodeLimits(max_message_size=4096,
                                                              max_depth=32))
    counter = iter(range(1, 1 << 30))

    def ids(n: int) -> bytes:
        return next(counter).to_bytes(n, "little")

    router_program.run(fdp, SEEDS, lambda: Router(store, config, id_factory=ids,
                                                  security=security, verify=_verify),
                       store, security)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
