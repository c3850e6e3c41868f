"""Reading an HTTP body with a ceiling, for bodies from outside (webhooks, GitHub's answers).

A body past the ceiling is given up at once: by its Content-Length before a
byte is read, or, sent without one, as soon as the bytes read pass it. So
memory holds at most the ceiling and one chunk, whatever the other end sends.
"""

from __future__ import annotations

from aiohttp import StreamReader

CHUNK_BYTES = 64 * 1024


async def read_at_most(
    content: StreamReader, content_length: int | None, limit: int
) -> bytes | None:
    """The whole body, or None when it is longer than `limit` bytes."""
    if content_length is not None and content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
