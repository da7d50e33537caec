"""Sans-IO core of the Rembus protocol.

Pure state machines: bytes and events in, bytes and events out, time passed
in as ``now``. Nothing here opens a socket, starts a thread, reads a clock or
an environment variable.
"""

from .constants import (
    CONFIG_TOPIC,
    CONNECTION_ID,
    LAST_RECEIVED,
    NOW,
    QOS1,
    QOS2,
    SLOT,
    MessageType,
    Status,
)
from .errors import (
    EncodeError,
    MalformedMessage,
    MessageTooLarge,
    ProtocolError,
    UnknownMessageType,
    WebSocketError,
)
from .messages import (
    DEFAULT_LIMITS,
    Ack,
    Ack2,
    Admin,
    Attestation,
    DecodeLimits,
    Identity,
    Message,
    Pub,
    Register,
    Request,
    Response,
    Rpc,
    Unregister,
    challenge_input,
    decode,
    encode,
    response_for,
)
from .payload import NO_ARGS, NO_DATA, Payload

__all__ = [
    "CONFIG_TOPIC",
    "CONNECTION_ID",
    "DEFAULT_LIMITS",
    "LAST_RECEIVED",
    "NOW",
    "NO_ARGS",
    "NO_DATA",
    "QOS1",
    "QOS2",
    "SLOT",
    "Ack",
    "Ack2",
    "Admin",
    "Attestation",
    "DecodeLimits",
    "EncodeError",
    "Identity",
    "MalformedMessage",
    "Message",
    "MessageTooLarge",
    "MessageType",
    "Payload",
    "ProtocolError",
    "Pub",
    "Register",
    "Request",
    "Response",
    "Rpc",
    "Status",
    "UnknownMessageType",
    "Unregister",
    "WebSocketError",
    "challenge_input",
    "decode",
    "encode",
    "response_for",
]
