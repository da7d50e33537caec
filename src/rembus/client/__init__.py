"""Client drivers: asyncio, threaded (``rembus.sync``), threadless (``rembus.blocking``), httpx."""
