"""Component URLs: where to connect and under which name."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
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
    alternates: tuple[tuple[str, str, int], ...] = ()
    """Other brokers (scheme, host, port) of the same cluster, tried in turn when the
    current one cannot be reached."""

    def next(self) -> ComponentURL:
        """The same component at the next broker of its list (itself when it has one)."""
        if not self.alternates:
            return self
        (scheme, host, port), *rest = self.alternates
        return ComponentURL(scheme, host, port, self.name,
                            (*rest, (self.scheme, self.host, self.port)))

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
    """``$REMBUS_BASE_URL`` (``ws://host:port`` or bare ``host:port``, or several of them
    separated by commas: the brokers of a cluster), else the default."""
    value = os.environ.get("REMBUS_BASE_URL", "").strip()
    return value or DEFAULT_BASE_URL


def parse(url: str | Sequence[str] | None = None, *, base: str | None = None
          ) -> ComponentURL:
    """Parse what users pass to ``component()``.

    * ``None`` -> anonymous, at the base URL;
    * ``"name"`` -> named ``name``, at the base URL;
    * ``"ws://host:port"`` -> anonymous; ``"ws://host:port/name"`` -> named;
    * a list of such URLs, all naming the same component (or none) -> the
      brokers of a cluster, tried in turn (:attr:`ComponentURL.alternates`).

    A base URL with several brokers separated by commas gives them all.
    """
    if isinstance(url, list | tuple):
        if not url:
            raise ValueError("an empty list of component URLs")
        parsed = [parse(one, base=base) for one in url]
        if len({one.name for one in parsed}) > 1:
            raise ValueError(f"the URLs of one component name different components: {url!r}")
        first = parsed[0]
        others = tuple((one.scheme, one.host, one.port) for one in parsed[1:])
        return ComponentURL(first.scheme, first.host, first.port, first.name,
                            (*others, *first.alternates))
    if url is not None and not isinstance(url, str):
        raise TypeError("the component URL must be a str, a list of str or None, "
                        f"not {type(url).__name__}")
    bases = [_endpoint(one.strip(), "REMBUS_BASE_URL")
             for one in (base if base is not None else base_url()).split(",") if one.strip()]
    if not bases:
        raise ValueError("invalid REMBUS_BASE_URL: no broker address")
    base_parts, alternates = bases[0], tuple(bases[1:])
    if url is None or url == "":
        return ComponentURL(*base_parts, None, alternates)
    if "://" not in url:
        if not _NAME.match(url):
            raise ValueError(f"invalid component name {url!r}: use a name without spaces or "
                             "'/', or a URL like 'ws://host:8000/name'")
        return ComponentURL(*base_parts, url, alternates)
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
