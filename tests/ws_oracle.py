"""Differential oracle: our frame reader against wsproto's frame layer.

Used by tests/test_ws_frames.py and fuzz/fuzz_ws_frames.py. Both parsers get
the same bytes; their outcomes are reduced to the same shape and compared.

An outcome is the list of whole items (messages, pings, pongs, close), the
close code of the error that stopped parsing (or None), whether the bytes of
an incomplete frame are still buffered and whether that frame's header has
been parsed. The two must agree exactly, with two allowances about a frame
whose header is parsed but whose payload is incomplete: we check message
continuity (1002) when the header arrives, wsproto with the first payload
byte; wsproto checks UTF-8 (1007) on partial payloads, we on the whole frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from rembus_proto.errors import FrameError, ProtocolError
from rembus_proto.wsevents import Pong, WsMessage
from rembus_proto.wsframes import CloseFrame, FrameReader, PingFrame, ReaderItem

Item = tuple[object, ...]


@dataclass
class Outcome:
    items: list[Item] = field(default_factory=list)
    error: int | None = None
    pending: bool = False
    in_payload: bool = False


def build_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask_key: bytes | None = None,
    length_form: int = 0,
) -> bytes:
    """Serialise one frame, valid or not (written independently of both parsers).

    ``length_form`` forces the length encoding: 0 shortest, 2 or 8 extended bytes.
    """
    n = len(payload)
    if length_form == 0:
        length_form = 0 if n < 126 else 2 if n < 0x10000 else 8
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    mask_bit = 0x80 if mask_key is not None else 0
    if length_form == 0:
        head = bytes((first, mask_bit | n))
    elif length_form == 2:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", n & 0xFFFF)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", n)
    if mask_key is None:
        return head + payload
    masked = bytes(b ^ mask_key[i % 4] for i, b in enumerate(payload))
    return head + mask_key + masked


def reference(data: bytes, *, client: bool) -> Outcome:
    """What wsproto's frame layer makes of ``data`` (given whole)."""
    proto = FrameProtocol(client=client, extensions=[])
    proto.receive_bytes(data)
    outcome = Outcome()
    parts: list[bytes | str] = []
    try:
        for frame in proto.received_frames():
            if frame.opcode is Opcode.PING:
                outcome.items.append(("ping", bytes(frame.payload)))  # type: ignore[arg-type]
            elif frame.opcode is Opcode.PONG:
                outcome.items.append(("pong", bytes(frame.payload)))  # type: ignore[arg-type]
            elif frame.opcode is Opcode.CLOSE:
                assert isinstance(frame.payload, tuple)
                code, reason = frame.payload
                outcome.items.append(("close", int(code), reason))
            else:
                parts.append(frame.payload)  # type: ignore[arg-type]
                if frame.message_finished:
                    if frame.opcode is Opcode.TEXT:
                        outcome.items.append(("message", "".join(parts)))  # type: ignore[arg-type]
                    else:
                        outcome.items.append(("message", b"".join(parts)))  # type: ignore[arg-type]
                    parts = []
    except ParseFailed as exc:
        outcome.error = int(exc.code)
    decoder = proto._frame_decoder
    outcome.pending = decoder.header is not None or len(decoder.buffer) > 0
    outcome.in_payload = decoder.header is not None
    return outcome


def _item(item: ReaderItem) -> Item:
    if isinstance(item, WsMessage):
        return ("message", item.data)
    if isinstance(item, Pong):
        return ("pong", item.payload)
    if isinstance(item, PingFrame):
        return ("ping", item.payload)
    assert isinstance(item, CloseFrame)
    return ("close", item.code, item.reason)


def ours(chunks: Iterable[bytes], *, client: bool) -> Outcome:
    """What our frame reader makes of ``chunks`` fed one after the other."""
    reader = FrameReader(client=client, max_size=1 << 63)
    raw: list[ReaderItem] = []
    outcome = Outcome()
    try:
        for chunk in chunks:
            reader.feed(chunk, raw)
    except FrameError as exc:
        outcome.error = exc.close_code
    except ProtocolError as exc:  # pragma: no cover - a failure the comparison reports
        raise AssertionError(f"unexpected {exc!r}") from exc
    outcome.items = [_item(item) for item in raw]
    outcome.pending = reader.pending
    outcome.in_payload = reader._frame is not None
    return outcome


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (clamped, sorted, repeats allowed)."""
    points = sorted(min(max(c, 0), len(data)) for c in cuts)
    pieces = []
    last = 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


def check(data: bytes, *, client: bool, cuts: Sequence[int] = ()) -> Outcome:
    """Assert that both parsers agree on ``data``; ours also fed in pieces."""
    ref = reference(data, client=client)
    whole = ours([data], client=client)
    pieces = ours(split(data, cuts), client=client)
    assert pieces == whole, f"depends on chunking: {pieces} != {whole}"
    assert whole.items == ref.items, f"items differ:\nours {whole}\nwsproto {ref}"
    if whole.error != ref.error:
        early_continuity_check = whole.error == 1002 and ref.error is None and ref.in_payload
        early_utf8_check = ref.error == 1007 and whole.error is None and whole.in_payload
        assert early_continuity_check or early_utf8_check, f"ours {whole}\nwsproto {ref}"
    return whole
