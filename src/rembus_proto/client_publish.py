"""Publications of the client machine: QoS0 and QoS1/QoS2 with resends, the outbox."""

from __future__ import annotations

from typing import Literal, overload

from .client_config import OutboxFull, OverflowPolicy, TooManyPending
from .client_events import PublishAcked, PublishFailed
from .client_state import (
    _OPEN,
    _Args,
    _args_error,
    _ClientState,
    _dumps,
    _publication,
    _QosPub,
    _topic_error,
    _type_name,
)
from .constants import QOS1, QOS2, QOS_MASK
from .messages import Ack, Ack2, Pub
from .payload import Payload


class _Publishing(_ClientState):
    """Publishing, acknowledgements and the outbox of publications made offline."""

    def _enqueue(self, item: bytes | _QosPub) -> None:
        outbox = self._outbox
        config = self._config
        if len(outbox) >= config.outbox_size:
            policy: OverflowPolicy = config.outbox_overflow
            if policy == "error":
                raise OutboxFull(f"the outbox already holds {len(outbox)} publications waiting "
                                 f"for a connection (ClientConfig.outbox_size); reconnect, "
                                 f"publish less or choose another outbox_overflow policy")
            if policy == "drop_newest" or not outbox:
                if type(item) is _QosPub:
                    self._events.append(PublishFailed(item.handle, "outbox full"))
                return
            old = outbox.popleft()
            if type(old) is _QosPub:
                del self._unacked[old.id]
                self._events.append(PublishFailed(old.handle, "dropped from the full outbox"))
        outbox.append(item)
        if type(item) is _QosPub:
            self._unacked[item.id] = item

    @overload
    def publish(self, topic: str, args: _Args, *, qos: Literal[0] = 0, now: float) -> None: ...
    @overload
    def publish(self, topic: str, args: _Args, *, qos: Literal[1, 2], now: float) -> int: ...
    @overload
    def publish(self, topic: str, args: _Args, *, qos: int, now: float) -> int | None: ...

    def publish(self, topic: str, args: _Args, *, qos: int = 0, now: float) -> int | None:
        """Publish ``args`` (the positional arguments) on ``topic``.

        QoS0 returns ``None``. QoS1/QoS2 return a handle reported later by
        ``PublishAcked`` or ``PublishFailed``; the publication is resent every
        ``ack_timeout`` until acknowledged, at most ``send_retries`` times (the
        resend that follows a reconnect is not counted).
        When not OPEN the publication goes to the outbox and is sent after the
        next connect; a full outbox follows ``ClientConfig.outbox_overflow``.
        Raises ``TooManyPending`` when ``max_unacked_publishes`` QoS
        publications are pending, ``EncodeError`` for unencodable args.
        """
        if type(topic) is not str:
            raise _topic_error(topic)
        kind = type(args)
        if kind is not tuple and kind is not list:
            if isinstance(args, Payload):
                return self._publish_payload(topic, args, qos, now)
            if not isinstance(args, (tuple, list)):
                raise _args_error(args)
        if qos == 0 and type(qos) is int:
            frame = _dumps([1, topic, args])
            if self._state is _OPEN:
                self._out.append(frame)
                self.published_bytes += len(frame)
            else:
                self._enqueue(frame)
            return None
        flags = self._qos_flags(qos)
        msg_id = self._new_id()
        return self._publish_qos(msg_id, _dumps([1 | flags, msg_id, topic, args]), qos, now)

    def _publish_payload(self, topic: str, data: Payload, qos: int, now: float) -> int | None:
        if qos == 0 and type(qos) is int:
            frame = Pub(topic, data).encode()
            if self._state is _OPEN:
                self._out.append(frame)
                self.published_bytes += len(frame)
            else:
                self._enqueue(frame)
            return None
        flags = self._qos_flags(qos)
        msg_id = self._new_id()
        return self._publish_qos(msg_id, Pub(topic, data, msg_id, flags).encode(), qos, now)

    def _qos_flags(self, qos: object) -> int:
        if type(qos) is not int:
            raise TypeError(f"qos must be the int 0, 1 or 2, not {_type_name(qos)}")
        if qos == 1:
            flags = QOS1
        elif qos == 2:
            flags = QOS2
        else:
            raise ValueError(f"qos must be 0, 1 or 2, not {qos}")
        if len(self._unacked) >= self._config.max_unacked_publishes:
            raise TooManyPending(f"{len(self._unacked)} QoS publications are already waiting "
                                 f"for an ACK (ClientConfig.max_unacked_publishes)")
        return flags

    def _publish_qos(self, msg_id: bytes, frame: bytes, qos: int, now: float) -> int:
        handle = next(self._handles)
        rec = _QosPub(msg_id, handle, frame, qos)
        if self._state is _OPEN:
            rec.sent = True
            self._unacked[msg_id] = rec
            self._arm(rec, now + self._config.ack_timeout)
            self._out.append(frame)
            self.published_bytes += len(frame)
        else:
            self._enqueue(rec)
        return handle

    def _on_qos_pub(self, msg: Pub, flags: int) -> None:
        msg_id = msg.id
        assert msg_id is not None
        at_receipt = self._config.ack_on_receipt
        if at_receipt:
            self._out.append(Ack(msg_id).encode())
        if flags == QOS_MASK:
            seen = self._qos2_seen
            acked = seen.get(msg_id)
            if acked is not None:
                if acked and not at_receipt:
                    self._out.append(Ack(msg_id).encode())  # our ACK was lost: again
                return  # not acked yet: the copy received first is still being handled
            seen[msg_id] = at_receipt
            if len(seen) > self._config.qos2_dedup_size:
                seen.popitem(last=False)
            self._events.append(_publication(msg.topic, msg.data, 2,
                                             None if at_receipt else msg_id))
        else:
            self._events.append(_publication(msg.topic, msg.data, 1,
                                             None if at_receipt else msg_id))

    def acknowledge(self, msg_id: bytes) -> None:
        """A handler got the publication ``msg_id`` (``PublicationReceived.msg_id``): ACK it.

        Only needed when ``ClientConfig.ack_on_receipt`` is false. While not
        OPEN nothing is sent: the broker sends the message again after the next
        login and a QoS2 copy is then acknowledged without a second delivery.
        """
        if msg_id in self._qos2_seen:
            self._qos2_seen[msg_id] = True
        if self._state is _OPEN:
            self._out.append(Ack(msg_id).encode())

    def release(self, msg_id: bytes) -> None:
        """The driver gives up the publication ``msg_id`` without acknowledging it.

        The broker sends it again later; a QoS2 copy is then delivered again
        rather than filtered as a duplicate. Ids already acknowledged are kept.
        """
        if self._qos2_seen.get(msg_id) is False:
            del self._qos2_seen[msg_id]

    def _on_ack(self, msg_id: bytes) -> None:
        rec = self._unacked.get(msg_id)
        if rec is None or not rec.sent:
            return
        del self._unacked[msg_id]
        rec.deadline = None
        if rec.qos == 2:
            self._out.append(Ack2(msg_id).encode())
        self._events.append(PublishAcked(rec.handle))
