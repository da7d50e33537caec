"""Rembus for Python: Pub/Sub and RPC over WebSocket and CBOR."""

from .version import __version__

__all__ = ["__version__"]
