"""WebSocket frames of the open state (RFC 6455 section 5), in bytes and out.

:class:`FrameReader` turns received bytes into whole messages and control
frames, reassembling fragments and enforcing the message size limit as each
frame header arrives. :class:`FrameWriter` serialises outgoing frames,
masking them on the client side.

No extension is ever negotiated, so any RSV bit is a protocol error. The
reader follows wsproto's frame layer check for check (tests and the fuzz
harness compare the two on the same bytes); it exists because a broker moves
many small messages and the generic layer costs several microseconds each.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .entropy import RandomPool, RandomSource
from .errors import FrameError, MessageTooLarge
from .wsevents import Pong, WsMessage
from .wsmask import INT_MASK_LIMIT as _INT_MASK_LIMIT
from .wsmask import mask
from .wsmask import mask_in_place as _mask_in_place
from .wsmask import mask_large as _mask_large
from .wsmask import mask_small as _mask_small

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

_OPCODES = frozenset((CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG))
# Codes 1000-2999 a peer may put in a close frame; 3000-4999 are always accepted.
# 1005, 1006 and 1015 are reserved for local use and never go on the wire.
_PEER_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))
_MAX_CONTROL_PAYLOAD = 125
# Payloads above this size are queued apart from their header rather than copied into it.
_JOIN_LIMIT = 4096

NO_STATUS = 1005


@dataclass(frozen=True, slots=True)
class PingFrame:
    """A ping received from the peer (answered by the connection, not reported)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseFrame:
    """A close frame received from the peer; ``code`` is 1005 when it had none."""

    code: int
    reason: str


ReaderItem = WsMessage | Pong | PingFrame | CloseFrame

# Building a frozen dataclass through its __init__ costs more than the rest of the
# fast path; these write the slot directly, as the generated __init__ does.
_new = object.__new__
_set_data: Callable[[WsMessage, bytes], None] = WsMessage.__dict__["data"].__set__

def _decode_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("text message is not valid UTF-8", 1007) from None


def parse_close(payload: bytes) -> CloseFrame:
    """Validate the payload of a received close frame."""
    if not payload:
        return CloseFrame(NO_STATUS, "")
    if len(payload) == 1:
        raise FrameError("close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if code not in _PEER_CLOSE_CODES and not 3000 <= code <= 4999:
        raise FrameError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("close reason is not valid UTF-8", 1007) from None
    return CloseFrame(code, reason)


def _check_control(b0: int, opcode: int, length: int) -> None:
    """Check the opcode of a frame that is not a known data frame."""
    if opcode not in _OPCODES:
        raise FrameError(f"invalid opcode {opcode:#x}")
    if not b0 & 0x80:
        raise FrameError("fragmented control frame")
    if length > _MAX_CONTROL_PAYLOAD:
        raise FrameError("control frame payload longer than 125 bytes")


def _length64(data: bytes, pos: int) -> int:
    length = int.from_bytes(data[pos + 2 : pos + 10], "big")
    if length < 0x10000:
        raise FrameError("payload length not in its shortest form")
    if length >> 63:
        raise FrameError("payload length with the most significant bit set")
    return length


class FrameReader:
    """Incremental parser of the frames one peer sends.

    ``client`` is the role of the local side: a server expects masked
    frames, a client unmasked ones. Messages larger than ``max_size`` bytes
    are refused as soon as a frame header announces them.

    :meth:`feed` appends :class:`WsMessage`, :class:`Pong`, :class:`PingFrame`
    and :class:`CloseFrame` items to a list; ``control`` becomes true when
    it appended a ping or a close, so the caller need not scan the list
    otherwise. Nothing is read after a close frame. Bad input raises
    :class:`FrameError` or :class:`MessageTooLarge`; items appended before
    the error stay in the list.

    Only whole frames are processed, and the bytes of an incomplete frame
    are kept until the rest arrives: at most one message's worth (the size
    limit is checked before waiting for a payload).
    """

    __slots__ = (
        "_buffered",
        "_decoder",
        "_fast_limit",
        "_frame",
        "_held",
        "_masked",
        "_max_size",
        "_need",
        "_opcode",
        "_parts",
        "_size",
        "_texts",
        "closed",
        "control",
    )

    def __init__(self, *, client: bool, max_size: int) -> None:
        self._masked = not client
        self._max_size = max_size
        self._fast_limit = min(max_size, _MAX_CONTROL_PAYLOAD)
        # Bytes of an incomplete frame: its start while the header is incomplete,
        # else only its payload, with the header kept in _frame (first byte, mask key).
        self._held: list[bytes] = []
        self._buffered = 0
        self._need = 0  # what _buffered must reach before parsing goes on
        self._frame: tuple[int, bytes | None] | None = None
        self._opcode = 0  # opcode of the fragmented message in progress, 0 when none
        self._parts: list[bytes] = []
        self._texts: list[str] = []
        self._decoder: codecs.IncrementalDecoder | None = None
        self._size = 0
        self.closed = False
        self.control = False

    @property
    def pending(self) -> bool:
        """True when the bytes of an incomplete frame are buffered."""
        return bool(self._held)

    @property
    def partial(self) -> int:
        """Bytes held for a message not received in full (incomplete frame, fragments)."""
        return (self._buffered if self._held else 0) + self._size

    def feed(self, data: bytes, out: list[ReaderItem]) -> None:
        """Parse ``data`` (appended to what is buffered) into ``out``."""
        if self.closed:
            return
        if self._held:
            resumed = self._resume(data, out)
            if resumed is None:
                return
            data = resumed
        self._parse(data, out)

    def _resume(self, data: bytes, out: list[ReaderItem]) -> bytes | None:
        """Add ``data`` to the held bytes; return what to parse next, ``None`` if nothing."""
        self._held.append(data)
        self._buffered += len(data)
        if self._buffered < self._need:
            return None
        if self._frame is None:
            joined = b"".join(self._held)  # a header split across reads
            self._held = []
            return joined
        rest = self._complete_payload(out)
        return None if self.closed else rest

    def _parse(self, data: bytes, out: list[ReaderItem]) -> None:
        """Parse whole frames from the start of ``data``; hold an incomplete last one."""
        end = len(data)
        pos = 0
        masked = self._masked
        mask_bit = 0x80 if masked else 0
        short_head = 6 if masked else 2
        fast_limit = self._fast_limit
        max_size = self._max_size
        out_append = out.append
        while True:
            if end - pos < 2:
                if pos < end:
                    self._hold_header(data, pos, 2)
                return
            # Fast path: a whole binary message in one frame with a 7- or 16-bit length and
            # the expected mask bit, outside a fragmented message, within the size limit.
            # Anything else, an incomplete frame included, takes the checked path below.
            if data[pos] == 0x82 and not self._opcode:
                n = data[pos + 1] ^ mask_bit
                if n <= fast_limit:
                    start = pos + short_head
                elif (n == 126 and end - pos >= 4
                      and 126 <= (n := (data[pos + 2] << 8) | data[pos + 3]) <= max_size):
                    start = pos + short_head + 2
                else:
                    start = -1
                stop = start + n
                if start >= 0 and stop <= end:
                    message = _new(WsMessage)
                    if not masked:
                        _set_data(message, data[start:stop])
                    elif n < _INT_MASK_LIMIT:
                        _set_data(message, _mask_small(data[start:stop], data[start - 4 : start]))
                    else:
                        _set_data(message, _mask_large(
                            bytearray(memoryview(data)[start:stop]), data[start - 4 : start]))
                    out_append(message)
                    pos = stop
                    continue
            header = self._header(data, pos)
            if isinstance(header, int):
                self._hold_header(data, pos, header)
                return
            pos = self._frame_at(data, pos, header, out)
            if pos < 0:
                return

    def _frame_at(self, data: bytes, pos: int, header: tuple[int, int, int, bool],
                  out: list[ReaderItem]) -> int:
        """Process the payload of the frame at ``pos`` with its checked ``header``; return
        where the next frame starts, or -1 when the rest of ``data`` is held (an incomplete
        payload) or the peer closed."""
        b0, head, length, keyed = header
        start = pos + head
        stop = start + length
        if stop > len(data):
            self._hold_payload(data, start, length, b0, keyed)
            return -1
        if not keyed:
            payload = data[start:stop]
        elif length < _INT_MASK_LIMIT:
            payload = _mask_small(data[start:stop], data[start - 4 : start])
        else:
            payload = _mask_large(bytearray(memoryview(data)[start:stop]), data[start - 4 : start])
        if b0 == 0x80 | BINARY:
            out.append(WsMessage(payload))
            return stop
        self._dispatch(b0, payload, out)
        return -1 if self.closed else stop

    def _header(self, data: bytes, pos: int) -> tuple[int, int, int, bool] | int:
        """Check the header at ``pos``: ``(first byte, header size, payload length, masked)``,
        or the bytes needed from ``pos`` when it is incomplete. Raises on a bad header."""
        avail = len(data) - pos
        b0 = data[pos]
        b1 = data[pos + 1]
        opcode = b0 & 0x0F
        length = b1 & 0x7F
        if opcode & 0x8 or opcode not in _OPCODES:
            _check_control(b0, opcode, length)
        head = 2
        if length == 126:
            if avail < 4:
                return 4
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:
                raise FrameError("payload length not in its shortest form")
            head = 4
        elif length == 127:
            if avail < 10:
                return 10
            length = _length64(data, pos)
            head = 10
        if b0 & 0x70:
            raise FrameError("reserved bit set but no extension was negotiated")
        keyed = bool(b1 & 0x80)
        if keyed:
            if not self._masked:
                raise FrameError("masked frame from a server")
            head += 4
            if avail < head:
                return head
        elif self._masked:
            raise FrameError("unmasked frame from a client")
        # A new message within the limit (the usual case) needs no more checks.
        if not opcode & 0x8 and (self._opcode or not opcode or length > self._max_size):
            self._check_data_frame(opcode, length)
        return b0, head, length, keyed

    def _check_data_frame(self, opcode: int, length: int) -> None:
        """Check a data frame against the message in progress and the size limit."""
        if opcode:
            if self._opcode:
                raise FrameError("new message inside a fragmented message")
            if length > self._max_size:
                raise MessageTooLarge(length, self._max_size)
        else:
            if not self._opcode:
                raise FrameError("continuation frame outside a fragmented message")
            if self._size + length > self._max_size:
                raise MessageTooLarge(self._size + length, self._max_size)

    def _hold_header(self, data: bytes, pos: int, need: int) -> None:
        """Keep the start of a frame whose header is incomplete until ``need`` bytes are there."""
        self._held = [data[pos:]]
        self._buffered = len(data) - pos
        self._need = need

    def _hold_payload(self, data: bytes, start: int, length: int, b0: int,
                      keyed: bool) -> None:
        """Keep the payload only (header in ``_frame``), so that completing it costs one
        copy however many reads it spans."""
        self._frame = (b0, data[start - 4 : start] if keyed else None)
        self._held = [data[start:]]
        self._buffered = len(data) - start
        self._need = length

    def _complete_payload(self, out: list[ReaderItem]) -> bytes:
        """Process the frame whose payload is now all held; return the bytes after it."""
        held = self._held
        extra = self._buffered - self._need
        rest = b""
        if extra:
            last = held[-1]
            rest = last[len(last) - extra :]
            held[-1] = last[: len(last) - extra]
        assert self._frame is not None
        b0, key = self._frame
        if key is None:
            payload = held[0] if len(held) == 1 else b"".join(held)
        elif self._need < _INT_MASK_LIMIT:
            payload = _mask_small(b"".join(held), key)
        else:
            payload = _mask_large(bytearray().join(held), key)
        self._held = []
        self._frame = None
        self._dispatch(b0, payload, out)
        return rest

    def _dispatch(self, b0: int, payload: bytes, out: list[ReaderItem]) -> None:
        opcode = b0 & 0x0F
        fin = bool(b0 & 0x80)
        if opcode == BINARY:
            if fin:
                out.append(WsMessage(payload))
            else:
                self._begin(BINARY, payload)
        elif opcode == TEXT:
            if fin:
                out.append(WsMessage(_decode_text(payload)))
            else:
                self._begin(TEXT, payload)
        elif opcode == CONTINUATION:
            self._continue(payload, fin, out)
        elif opcode == PONG:
            out.append(Pong(payload))
        elif opcode == PING:
            out.append(PingFrame(payload))
            self.control = True
        else:
            out.append(parse_close(payload))
            self.control = True
            self.closed = True
            self._held = []

    def _begin(self, opcode: int, payload: bytes) -> None:
        self._opcode = opcode
        self._size = len(payload)
        if opcode == TEXT:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
            self._texts = [self._decode_part(payload, False)]
        else:
            self._parts = [payload]

    def _continue(self, payload: bytes, fin: bool, out: list[ReaderItem]) -> None:
        self._size += len(payload)
        if self._decoder is not None:
            self._texts.append(self._decode_part(payload, fin))
            if fin:
                out.append(WsMessage("".join(self._texts)))
        else:
            self._parts.append(payload)
            if fin:
                out.append(WsMessage(b"".join(self._parts)))
        if fin:
            self._opcode = 0
            self._size = 0
            self._parts = []
            self._texts = []
            self._decoder = None

    def _decode_part(self, payload: bytes, final: bool) -> str:
        assert self._decoder is not None
        try:
            return self._decoder.decode(payload, final)
        except UnicodeDecodeError:
            raise FrameError("text message is not valid UTF-8", 1007) from None


def _header(first: int, n: int, mask_bit: int) -> bytes:
    if n < 126:
        return bytes((first, mask_bit | n))
    if n < 0x10000:
        return bytes((first, mask_bit | 126, n >> 8, n & 0xFF))
    return bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")


# Two-byte headers of short data frames, by first byte (plus 0x100 for masked ones).
_SHORT_HEADERS = {
    first | masked << 8: [bytes((first, masked << 7 | n)) for n in range(126)]
    for first in (0x80 | TEXT, 0x80 | BINARY)
    for masked in (0, 1)
}


class FrameWriter:
    """Serialises frames for one side of a connection (``client`` masks them).

    ``random`` gives the mask keys (default: a :class:`RandomPool` of its own).
    """

    __slots__ = ("_client", "_keys")

    def __init__(self, *, client: bool, random: RandomSource | None = None) -> None:
        self._client = client
        self._keys = random if random is not None else RandomPool()

    def message(self, data: bytes | bytearray | memoryview | str, out: list[bytes]) -> None:
        """Append the frame of one whole message (``str`` is sent as text) to ``out``."""
        if data.__class__ is bytes:
            payload: bytes = data
            first = 0x80 | BINARY
        elif isinstance(data, str):
            payload = data.encode("utf-8")
            first = 0x80 | TEXT
        else:
            payload = bytes(data)
            first = 0x80 | BINARY
        n = len(payload)
        if self._client:
            key = self._keys(4)
            if n < _INT_MASK_LIMIT:
                head = _SHORT_HEADERS[first | 0x100][n] if n < 126 else _header(first, n, 0x80)
                out.append(head + key + _mask_small(payload, key))
            else:  # one copy into the frame, masked there
                frame = bytearray(_header(first, n, 0x80))
                frame += key
                start = len(frame)
                frame += payload
                _mask_in_place(frame, key, start)
                out.append(bytes(frame))
        elif n < 126:
            out.append(_SHORT_HEADERS[first][n] + payload)
        elif n > _JOIN_LIMIT:
            out.append(_header(first, n, 0))
            out.append(payload)
        else:
            out.append(_header(first, n, 0) + payload)

    def messages(self, frames: Iterable[bytes], out: list[bytes]) -> None:
        """Append the frames of whole binary messages to ``out``."""
        if self._client:
            for frame in frames:
                self.message(frame, out)
            return
        short = _SHORT_HEADERS[0x80 | BINARY]
        extend = out.extend
        for payload in frames:
            n = len(payload)
            if n < 126:
                extend((short[n], payload))
            else:
                self.message(payload, out)

    def control(self, opcode: int, payload: bytes = b"") -> bytes:
        """Return a control frame (ping, pong or close); ``payload`` is at most 125 bytes."""
        if len(payload) > _MAX_CONTROL_PAYLOAD:
            raise ValueError("control frame payload longer than 125 bytes")
        if self._client:
            key = self._keys(4)
            return _header(0x80 | opcode, len(payload), 0x80) + key + mask(payload, key)
        return _header(0x80 | opcode, len(payload), 0) + payload

    def close(self, code: int | None, reason: str = "") -> bytes:
        """Return a close frame; no code (``None`` or 1005) means an empty payload."""
        if code is None or code == NO_STATUS:
            return self.control(CLOSE)
        raw = reason.encode("utf-8")
        if len(raw) > _MAX_CONTROL_PAYLOAD - 2:
            raw = raw[: _MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode("utf-8")
        return self.control(CLOSE, code.to_bytes(2, "big") + raw)
