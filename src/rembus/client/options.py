"""Options of a component, shared by every driver."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from rembus_proto import ClientConfig

OverflowPolicy = Literal["error", "drop_oldest", "drop_newest"]
Transport = Literal["native", "httpx"]
DataFrameKind = Literal["pyarrow", "pandas", "polars"]


def env_timeout() -> float:
    """``$REMBUS_TIMEOUT`` in seconds (default 10)."""
    raw = os.environ.get("REMBUS_TIMEOUT", "").strip()
    if not raw:
        return 10.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"REMBUS_TIMEOUT must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"REMBUS_TIMEOUT must be positive, not {raw!r}")
    return value


@dataclass(frozen=True)
class Options:
    """How a component behaves; pass any of these as keyword arguments to ``component()``."""

    timeout: float = field(default_factory=env_timeout)
    """Seconds to wait for an answer to a request (``$REMBUS_TIMEOUT``, default 10)."""
    connect_timeout: float | None = None
    """Seconds to wait for the TCP connection, then again for the WebSocket upgrade answer
    (default: ``timeout``)."""
    ack_timeout: float = 2.0
    """Seconds before a QoS1/QoS2 publication is sent again."""
    send_retries: int = 10
    reconnect: bool = True
    """Reconnect by itself after the connection is lost."""
    reconnect_initial: float = 0.2
    """First delay before reconnecting; it doubles up to ``reconnect_max``, with jitter."""
    reconnect_max: float = 10.0
    outbox_size: int = 10_000
    """Publications kept while disconnected, sent in order after reconnecting."""
    outbox_overflow: OverflowPolicy = "error"
    """When the outbox is full: ``error`` raises ``OutboxFull``, ``drop_oldest`` forgets the
    oldest queued publication, ``drop_newest`` ignores the new one."""
    max_pending: int = 100_000
    """Requests in flight at once."""
    max_message_size: int = 60 * 1024 * 1024
    max_held_messages: int = 10_000
    """Publications kept (un-acknowledged) for topics whose handler is not registered yet,
    delivered in order when ``subscribe`` registers it; beyond it they are dropped, logged
    and counted in ``dropped_messages`` (the broker resends dropped QoS1/QoS2 ones later)."""
    max_handler_tasks: int = 1_000
    """Async handlers running at once; beyond it, reading from the broker pauses."""
    workers: int = 8
    """Threads that run exposed methods in the sync API (subscribers run in order on one)."""
    transport: Transport = "native"
    """``native`` (asyncio streams) or ``httpx`` (httpx-ws: proxies, custom TLS)."""
    ssl_context: ssl.SSLContext | None = None
    """TLS settings for ``wss://``; default: ``$HTTP_CA_BUNDLE``, a CA in the rembus dir,
    else the system's trust store."""
    dataframe: DataFrameKind = "pyarrow"
    """What a received DataFrame becomes: a pyarrow Table, a pandas or a polars DataFrame."""
    meta: Any = None
    """Extra map sent with IDENTITY (upstream peers use it to advertise listeners)."""

    def __post_init__(self) -> None:
        for name in ("timeout", "ack_timeout", "reconnect_initial", "reconnect_max",
                     "connect_timeout"):
            value = getattr(self, name)
            if value is None and name == "connect_timeout":
                continue
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        for name in ("send_retries", "outbox_size", "max_pending", "max_message_size",
                     "max_held_messages", "max_handler_tasks", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "send_retries" else 1):
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.outbox_overflow not in ("error", "drop_oldest", "drop_newest"):
            raise ValueError("outbox_overflow must be 'error', 'drop_oldest' or 'drop_newest'")
        if self.transport not in ("native", "httpx"):
            raise ValueError("transport must be 'native' or 'httpx'")
        if self.dataframe not in ("pyarrow", "pandas", "polars"):
            raise ValueError("dataframe must be 'pyarrow', 'pandas' or 'polars'")

    @property
    def open_timeout(self) -> float:
        """Seconds allowed for each step of connecting: ``connect_timeout`` or ``timeout``."""
        return float(self.timeout if self.connect_timeout is None else self.connect_timeout)

    def client_config(self) -> ClientConfig:
        """The protocol core's configuration."""
        base = ClientConfig()
        return replace(
            base,
            request_timeout=float(self.timeout),
            ack_timeout=float(self.ack_timeout),
            send_retries=self.send_retries,
            max_pending_requests=self.max_pending,
            outbox_size=self.outbox_size,
            outbox_overflow=self.outbox_overflow,
            ack_on_receipt=False,
            limits=replace(base.limits, max_message_size=self.max_message_size),
        )


def make_options(options: dict[str, Any]) -> Options:
    """Build :class:`Options` from keyword arguments, with a clear error for typos."""
    known = Options.__dataclass_fields__
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; "
                        f"valid options: {', '.join(sorted(known))}")
    return Options(**options)
