"""Wire constants of the Rembus protocol: type codes, flags and status codes."""

from __future__ import annotations

import enum


class MessageType(enum.IntEnum):
    """Low nibble of the type byte."""

    IDENTITY = 0
    PUB = 1
    RPC = 2
    ADMIN = 3
    RESPONSE = 4
    ACK = 5
    ACK2 = 6
    UNREGISTER = 9
    REGISTER = 10
    ATTESTATION = 11


#: PUB flag: at-least-once delivery.
QOS1 = 0x10
#: PUB flags: exactly-once delivery (includes ``QOS1``).
QOS2 = 0x30
#: PUB flag: the id carries a time slot in its low 32 bits.
SLOT = 0x40
QOS_MASK = 0x30
FLAGS_MASK = 0xF0


class Status(enum.IntEnum):
    """RESPONSE status codes."""

    OK = 0
    GENERIC_ERROR = 10
    CHALLENGE = 11
    IDENTIFICATION_ERROR = 20
    METHOD_EXCEPTION = 40
    METHOD_ARGS_ERROR = 41
    METHOD_NOT_FOUND = 42
    METHOD_UNAVAILABLE = 43
    METHOD_LOOPBACK = 44
    TARGET_NOT_FOUND = 45
    TARGET_DOWN = 46
    UNKNOWN_ADMIN_CMD = 47
    NAME_ALREADY_TAKEN = 60
    TIMEOUT = 70


#: Topic used by broker-level admin commands.
CONFIG_TOPIC = "__config__"
#: Id used by the unsolicited challenge of "authenticated" brokers.
CONNECTION_ID = (0x12345678DEADBEEF).to_bytes(8, "little")
#: ``msg_from`` value meaning "only what is published from now on".
NOW = 0.0
#: ``msg_from`` value meaning "everything since the last delivered message".
LAST_RECEIVED = float("inf")
#: Default maximum size of one message (60 MiB, as upstream).
DEFAULT_MAX_MESSAGE_SIZE = 60 * 1024 * 1024
#: Default maximum CBOR nesting depth of a payload.
DEFAULT_MAX_DEPTH = 200
#: Default maximum length of a message id in bytes (ids are 8 or 16 bytes).
DEFAULT_MAX_ID_LENGTH = 64
