"""The broker: an asyncio server around the sans-IO router, and its SQLite store."""
