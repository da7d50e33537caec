"""Differential fuzzing of our WebSocket frame reader against wsproto's frame layer.

Run: python fuzz/fuzz_ws_frames.py -max_total_time=20 [corpus-dir]

The input picks the role (client or server side), where to cut the stream
into reads, and the stream. Both parsers must report the same messages,
pings, pongs, close and error code (tests/ws_oracle.py states the two
allowed timing differences); ours must not depend on the cuts.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("atheris is not installed: python -m pip install -e '.[fuzz]'")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

with atheris.instrument_imports():
    import wsproto.frame_protocol  # noqa: F401  (instrumented for coverage of both sides)

    import rembus_proto.wsframes  # noqa: F401
    import ws_oracle


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    client = fdp.ConsumeBool()
    cuts = [fdp.ConsumeIntInRange(0, 300) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    ws_oracle.check(fdp.ConsumeBytes(fdp.remaining_bytes()), client=client, cuts=cuts)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
