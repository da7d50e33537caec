"""Coverage-guided fuzzing of the JSON dialect of text frames.

Run: python fuzz/fuzz_json.py -max_total_time=60 [corpus-dir]
Only rembus_proto.ProtocolError may escape the translation of a text frame to
CBOR; what the broker would write back as JSON must translate again.
"""

from __future__ import annotations

import json
import sys
from typing import Any

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("atheris is not installed: python -m pip install -e '.[fuzz]'")

with atheris.instrument_imports():
    import rembus_proto as rp
    from rembus_proto.jsonrpc import encode_json, to_cbor

_SENT_BY_BROKERS = (rp.Pub, rp.Rpc, rp.Response, rp.Ack, rp.Ack2, rp.Admin)
_KEYS = ["jsonrpc", "id", "method", "params", "data", "result", "error", "type", "__type__",
         "sts", "cid", "pin", "key_val", "key_type", "signature", "meta"]
_TYPES = [0, 1, 3, 4, 5, 6, 9, 10, 11, 16, 17, 48, 49, 64, 112, 255]


def _value(fdp: Any, depth: int) -> Any:
    """A JSON value shaped like the dialect's, so that mutations reach every branch."""
    choice = fdp.ConsumeIntInRange(0, 9 if depth < 4 else 5)
    if choice == 0:
        return None
    if choice == 1:
        return fdp.PickValueInList(_TYPES)
    if choice == 2:
        return fdp.ConsumeInt(9)  # up to 72 bits, either sign
    if choice == 3:
        return fdp.ConsumeUnicodeNoSurrogates(12)
    if choice == 4:
        return str(fdp.ConsumeIntInRange(0, 2**66))  # a decimal-string id
    if choice == 5:
        return fdp.ConsumeFloat()
    if choice in (6, 7):
        return {fdp.PickValueInList(_KEYS): _value(fdp, depth + 1)
                for _ in range(fdp.ConsumeIntInRange(0, 5))}
    return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        text = fdp.ConsumeUnicodeNoSurrogates(len(data))
    else:
        text = json.dumps(_value(fdp, 0))
    try:
        message = rp.decode(to_cbor(text))
    except rp.ProtocolError:
        return
    if isinstance(message, _SENT_BY_BROKERS):
        to_cbor(encode_json(message))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
