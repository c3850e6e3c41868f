"""HTTP edge: the aiohttp app, its routes, logs and request context."""
