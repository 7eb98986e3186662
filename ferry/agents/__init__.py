"""The I/O shell: asyncio outer and inner agents around the sans-IO core."""
