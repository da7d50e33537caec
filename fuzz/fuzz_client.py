"""Coverage-guided fuzzing of the client protocol state machine.

Run: python fuzz/fuzz_client.py -max_total_time=20 [corpus-dir]

The input is read as a program: a first choice of starting state (anonymous
and open, named and handshaking, named and challenged), then a sequence of
operations — raw frames, RESPONSE/ACK frames aimed at ids the client really
sent (with fuzzed status and payload bytes), clock advances, reconnects,
application actions and replies. Only ``ProtocolError`` may escape
``receive_message``; the documented local errors may escape the actions.
"""

from __future__ import annotations

import contextlib
import sys

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("atheris is not installed: python -m pip install -e '.[fuzz]'")

with atheris.instrument_imports():
    from rembus_proto import ProtocolError, decode
    from rembus_proto.cbor import byte_string, head
    from rembus_proto.client import (
        ClientConfig,
        ClientConnection,
        ConnectionState,
        InvalidState,
        NotConnected,
        OutboxFull,
        TooManyPending,
    )
    from rembus_proto.client_events import RequestReceived
    from rembus_proto.messages import DecodeLimits

CONFIG = ClientConfig(request_timeout=5.0, ack_timeout=1.0, send_retries=2,
                      max_pending_requests=8, max_unacked_publishes=4, outbox_size=3,
                      outbox_overflow="drop_oldest", qos2_dedup_size=4,
                      limits=DecodeLimits(max_message_size=4096, max_depth=32))
LOCAL_ERRORS = (NotConnected, TooManyPending, OutboxFull)
TOPICS = ("a", "f", "__config__")


class Ids:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, length: int) -> bytes:
        self.count += 1
        return self.count.to_bytes(length, "big")


class Run:
    def __init__(self, mode: int) -> None:
        name = None if mode == 0 else "fuzzer"
        self.conn = ClientConnection(name, CONFIG, id_factory=Ids())
        self.now = 0.0
        self.sent_ids: list[bytes] = []
        self.incoming: list[bytes] = []
        self.conn.expose("f", now=0.0)
        self.conn.connect(0.0)
        self.drain()
        if mode == 2:
            self.feed(b"\x84\x04" + byte_string(self.sent_ids[-1]) + b"\x0b\x44abcd")

    def drain(self) -> None:
        for frame in self.conn.data_to_send():
            msg = decode(frame)  # the client only ever sends valid messages
            msg_id = getattr(msg, "id", None)
            if msg_id is not None:
                self.sent_ids.append(msg_id)
        del self.sent_ids[:-16]
        for event in self.conn.events():
            if isinstance(event, RequestReceived):
                self.incoming.append(event.request_id)
            data = getattr(event, "data", None)
            if data is not None:
                with contextlib.suppress(ProtocolError):
                    data.value  # noqa: B018
        del self.incoming[:-16]
        conn = self.conn
        assert conn.pending_count <= CONFIG.max_pending_requests
        assert conn.unacked_count <= CONFIG.max_unacked_publishes
        assert conn.outbox_len <= CONFIG.outbox_size
        deadline = conn.next_deadline()
        assert deadline is None or deadline > self.now

    def feed(self, frame: bytes) -> None:
        with contextlib.suppress(ProtocolError):
            self.conn.receive_message(frame, self.now)
        self.drain()

    def pick_id(self, fdp: atheris.FuzzedDataProvider) -> bytes:
        if not self.sent_ids:
            return bytes(8)
        return self.sent_ids[fdp.ConsumeIntInRange(0, len(self.sent_ids) - 1)]

    def step(self, fdp: atheris.FuzzedDataProvider) -> None:
        conn = self.conn
        op = fdp.ConsumeIntInRange(0, 8)
        if op == 0:
            self.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 255)))
        elif op == 1:
            status = fdp.ConsumeIntInRange(0, 70)
            raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32))
            self.feed(b"\x84\x04" + byte_string(self.pick_id(fdp)) + head(0, status) + raw)
        elif op == 2:
            kind = fdp.ConsumeIntInRange(5, 6)
            self.feed(bytes((0x82, kind)) + byte_string(self.pick_id(fdp)))
        elif op == 3:
            self.now += fdp.ConsumeIntInRange(0, 12) / 2
            conn.handle_timer(self.now)
            self.drain()
        elif op == 4:
            conn.connection_lost(self.now)
            if fdp.ConsumeBool():
                conn.connect(self.now)
            self.drain()
        elif op == 5:
            self.act(fdp)
        elif op == 6 and self.incoming:
            conn.respond(self.incoming.pop(), fdp.ConsumeIntInRange(0, 50),
                         fdp.ConsumeUnicodeNoSurrogates(8))
            self.drain()
        elif op == 7 and conn.state is ConnectionState.CHALLENGED:
            with contextlib.suppress(InvalidState):
                conn.attest(fdp.ConsumeBytes(8), self.now)
            self.drain()
        elif op == 8:
            topic = TOPICS[fdp.ConsumeIntInRange(0, 2)]
            flags = (0x10, 0x30, 0x40, 0x70)[fdp.ConsumeIntInRange(0, 3)]
            raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 32))
            frame = (b"\x84" + head(0, 1 | flags) + byte_string(self.pick_id(fdp))
                     + head(3, len(topic)) + topic.encode() + raw)
            self.feed(frame)
            self.feed(b"\x85\x02" + byte_string(self.pick_id(fdp)) + head(3, len(topic))
                      + topic.encode() + b"\xf6" + raw)

    def act(self, fdp: atheris.FuzzedDataProvider) -> None:
        conn = self.conn
        topic = TOPICS[fdp.ConsumeIntInRange(0, 2)]
        action = fdp.ConsumeIntInRange(0, 6)
        try:
            if action == 0:
                conn.publish(topic, [fdp.ConsumeInt(4)], qos=fdp.ConsumeIntInRange(0, 2),
                             now=self.now)
            elif action == 1:
                conn.rpc(topic, (), now=self.now)
            elif action == 2:
                conn.subscribe(topic, now=self.now)
            elif action == 3:
                conn.unsubscribe(topic, now=self.now)
            elif action == 4:
                conn.expose(topic, now=self.now)
            elif action == 5:
                conn.reactive(fdp.ConsumeBool(), now=self.now)
            else:
                conn.close()
        except LOCAL_ERRORS:
            pass
        self.drain()


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    run = Run(fdp.ConsumeIntInRange(0, 2))
    for _ in range(64):
        if not fdp.remaining_bytes():
            break
        run.step(fdp)
    run.conn.close()
    run.drain()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
