"""Coverage-guided fuzzing of the message decoder.

Run: python fuzz/fuzz_decode.py -max_total_time=60 [corpus-dir]
Only rembus_proto.ProtocolError may escape decode() and payload decoding.
"""

from __future__ import annotations

import sys

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("atheris is not installed: python -m pip install -e '.[fuzz]'")

with atheris.instrument_imports():
    import rembus_proto as rp


def test_one_input(data: bytes) -> None:
    try:
        message = rp.decode(data, rp.DecodeLimits(max_message_size=4096, max_depth=64))
        payload = getattr(message, "data", None)
        if payload is not None:
            payload.validate()
            _ = payload.args
        rp.decode(rp.encode(message))
    except rp.ProtocolError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
