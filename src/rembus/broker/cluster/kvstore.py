"""A JetStream key-value bucket with the writes leases need: compare-and-set, with a TTL.

Built on the JetStream conventions of NATS key-value buckets (stream
``KV_<bucket>``, subjects ``$KV.<bucket>.<key>``, operation header ``KV-Operation``)
so that the ``nats kv`` tools see the same data, but every write carries the
headers we choose: the expected last revision of the key
(``Nats-Expected-Last-Subject-Sequence``, 0 = "absent") and a per-key
time-to-live (``Nats-TTL``, whole seconds, nats-server 2.11 and later), also on
the purge marker that erases a key, so that erased keys leave nothing behind.

Reads go to the stream leader (no "direct get"), so that a read after a write
sees it, whichever node the client is connected to.

Errors from NATS (no responders, timeouts, a lost connection) are raised as
the ``nats.errors.Error`` subclasses the client raises; a write whose expected
revision does not match is not an error: it returns ``None`` / ``False``.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError

from .subjects import MAX_SUBJECT, SubjectError

_OPERATION = "KV-Operation"
_ROLLUP = "Nats-Rollup"
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_TTL = "Nats-TTL"
_PURGE = "PURGE"
_DELETE = "DEL"
# JetStream error codes of "the last sequence of the subject is not the expected one".
_WRONG_LAST = (10071, 10164)


@dataclass(frozen=True)
class Entry:
    """The latest message of a key: its value (``None`` for an erase marker) and revision."""

    value: bytes | None
    revision: int


class Bucket:
    """One key-value bucket of JetStream; keys are ``[-_A-Za-z0-9]`` (see ``encode_segment``)."""

    def __init__(self, js: JetStreamContext, name: str) -> None:
        self._js = js
        self.name = name
        self.stream = f"KV_{name}"
        self._prefix = f"$KV.{name}."

    @classmethod
    async def open(cls, js: JetStreamContext, name: str, replicas: int = 1,
                   max_value_size: int = 1024) -> Bucket:
        """Bind to bucket ``name``, creating it (per-key TTL allowed) when it does not exist.

        Creating is idempotent: brokers starting together all succeed when they
        ask for the same configuration.
        """
        try:
            await js.key_value(name)
        except BucketNotFoundError:
            await js.create_key_value(bucket=name, history=1, replicas=replicas,
                                      max_value_size=max_value_size, direct=False,
                                      storage=api.StorageType.FILE)
        return cls(js, name)

    def _subject(self, key: str) -> str:
        subject = self._prefix + key
        if len(subject) > MAX_SUBJECT:
            raise SubjectError(f"key longer than the subject limit: {key[:40]!r}…")
        return subject

    async def get(self, key: str) -> Entry | None:
        """The latest entry of ``key`` (an erase marker included), ``None`` when there is none."""
        try:
            msg = await self._js.get_msg(self.stream, subject=self._subject(key))
        except NotFoundError:
            return None
        assert msg.seq is not None
        operation = (msg.headers or {}).get(_OPERATION)
        value = None if operation in (_PURGE, _DELETE) else (msg.data or b"")
        return Entry(value, msg.seq)

    async def write(self, key: str, value: bytes, expected: int | None,
                    ttl: int | None) -> int | None:
        """Set ``key`` if its latest revision is ``expected`` (0: no message); the new revision.

        ``expected=None`` writes whatever the key holds. ``ttl``: seconds until
        the server removes the value, unless written again. ``None`` when the
        key has another revision.
        """
        return await self._publish(key, value, {}, expected, ttl)

    async def erase(self, key: str, expected: int | None, ttl: int | None) -> bool:
        """Remove ``key`` if its latest revision is ``expected`` (``None``: whatever it is).

        A purge marker replaces every earlier value; the marker itself goes
        away after ``ttl`` seconds (``None``: it stays, so the key reads as erased
        rather than as never written), so erased keys cost nothing in the end.
        """
        headers = {_OPERATION: _PURGE, _ROLLUP: "sub"}
        return await self._publish(key, b"", headers, expected, ttl) is not None

    async def _publish(self, key: str, value: bytes, headers: dict[str, str],
                       expected: int | None, ttl: int | None) -> int | None:
        if expected is not None:
            headers[_EXPECTED_LAST] = str(expected)
        if ttl is not None:
            headers[_TTL] = str(ttl)
        try:
            ack = await self._js.publish(self._subject(key), value, headers=headers)
        except APIError as error:
            if error.err_code in _WRONG_LAST:
                return None
            raise
        return ack.seq
