"""Component URLs: where to connect and under which name."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "ws://127.0.0.1:8000"
_NAME = re.compile(r"^[^\s/?#]+$")


@dataclass(frozen=True, slots=True)
class ComponentURL:
    """A parsed component URL."""

    scheme: str
    """``ws`` or ``wss``."""
    host: str
    port: int
    name: str | None
    """``None`` for an anonymous component."""

    @property
    def secure(self) -> bool:
        return self.scheme == "wss"

    @property
    def endpoint(self) -> str:
        """``scheme://host:port`` (the name is not part of the connection)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.endpoint}/{self.name}" if self.name else self.endpoint


def base_url() -> str:
    """``$REMBUS_BASE_URL`` (``ws://host:port`` or bare ``host:port``), else the default."""
    value = os.environ.get("REMBUS_BASE_URL", "").strip()
    return value or DEFAULT_BASE_URL


def parse(url: str | None = None, *, base: str | None = None) -> ComponentURL:
    """Parse what users pass to ``component()``.

    * ``None`` -> anonymous, at the base URL;
    * ``"name"`` -> named ``name``, at the base URL;
    * ``"ws://host:port"`` -> anonymous; ``"ws://host:port/name"`` -> named.
    """
    if url is not None and not isinstance(url, str):
        raise TypeError(f"the component URL must be a str or None, not {type(url).__name__}")
    base_parts = _endpoint(base if base is not None else base_url(), "REMBUS_BASE_URL")
    if url is None or url == "":
        return ComponentURL(*base_parts, None)
    if "://" not in url:
        if not _NAME.match(url):
            raise ValueError(f"invalid component name {url!r}: use a name without spaces or "
                             "'/', or a URL like 'ws://host:8000/name'")
        return ComponentURL(*base_parts, url)
    scheme, host, port = _endpoint(url, "component URL")
    path = urlsplit(url).path.strip("/")
    if "/" in path:
        raise ValueError(f"invalid component URL {url!r}: the path must be just the name")
    return ComponentURL(scheme, host, port, path or None)


def _endpoint(url: str, what: str) -> tuple[str, str, int]:
    if "://" not in url:
        url = "ws://" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid {what} {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ValueError(f"invalid {what} {url!r}: the scheme must be ws or wss")
    if not parts.hostname:
        raise ValueError(f"invalid {what} {url!r}: no host")
    if port is None:
        port = 443 if scheme == "wss" else 80
    return scheme, parts.hostname, port
