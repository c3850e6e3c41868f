"""Client connections of `ghvault serve`: how many at once, and which one makes room.

Each connection holds a file descriptor, and a process out of descriptors
answers nobody, /healthz included. So at most `cap` are open. When one more
arrives, the connection idle the longest is closed for it: one that has not
finished sending its first request, one between keep-alive requests, or a
websocket that has not sent connection_init. Strangers who open sockets and
send nothing therefore only ever push each other out. A connection in a
request is never closed to make room; when every one is, the newcomer gets
a 503 at once. How long a connection may stay idle at all is aiohttp's
keep-alive timeout, which also runs before the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

from server.http.throttle import Throttle

logger = logging.getLogger("ghvault.server")

SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 21\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"too many connections\n"
)


class ConnectionLimit:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: set[ClientConnection] = set()
        # The open connections not in a request, longest idle first.
        self._idle: dict[ClientConnection, None] = {}
        self._evictions = Throttle()
        self._refusals = Throttle()
        self._drained: asyncio.Event | None = None  # set when no request is left

    def protocol_factory(
        self, server: web.Server, **handler_args: Any
    ) -> Callable[[], ClientConnection]:
        """What the listening socket makes of each accepted connection."""
        loop = asyncio.get_running_loop()
        return lambda: ClientConnection(self, server, loop=loop, **handler_args)

    @property
    def in_request(self) -> int:
        return len(self._open) - len(self._idle)

    def admit(self, connection: ClientConnection) -> bool:
        """Count in a new connection, closing the longest idle one if it needs the room."""
        if len(self._open) >= self.cap and not self._close_longest_idle():
            if (count := self._refusals.event()) is not None:
                logger.warning(
                    "connection cap (%d) reached with every connection in a request: "
                    "%d refused with 503 (logged at most every %g s)",
                    self.cap,
                    count,
                    self._refusals.interval,
                )
            return False
        self._open.add(connection)
        self._idle[connection] = None
        return True

    def busy(self, connection: ClientConnection) -> None:
        self._idle.pop(connection, None)

    def idle(self, connection: ClientConnection) -> None:
        if connection in self._open:
            self._idle.pop(connection, None)
            self._idle[connection] = None  # now the most recently idle
        self._notice_drained()

    def closed(self, connection: ClientConnection) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)
        self._notice_drained()

    async def drained(self, within: float) -> bool:
        """Wait until no connection is in a request, for at most `within` seconds."""
        self._drained = asyncio.Event()
        self._notice_drained()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), within)
        return not self.in_request

    def _notice_drained(self) -> None:
        if self._drained is not None and not self.in_request:
            self._drained.set()

    def _close_longest_idle(self) -> bool:
        victim = next(iter(self._idle), None)
        if victim is None:
            return False
        self.closed(victim)
        victim.force_close()
        if (count := self._evictions.event()) is not None:
            logger.info(
                "connection cap (%d) reached: %d idle connections closed to make room "
                "(logged at most every %g s)",
                self.cap,
                count,
                self._evictions.interval,
            )
        return True


class ClientConnection(web.RequestHandler):
    """aiohttp's connection handler, counted by a ConnectionLimit."""

    def __init__(self, limit: ConnectionLimit, server: web.Server, **handler_args: Any) -> None:
        super().__init__(server, **handler_args)
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.limit.admit(self):
            assert isinstance(transport, asyncio.Transport)
            transport.write(SERVICE_UNAVAILABLE)
            self.force_close()  # closes once the answer is written

    def connection_lost(self, exc: BaseException | None) -> None:
        self.limit.closed(self)
        super().connection_lost(exc)

    def log_access(
        self, request: BaseRequest, response: StreamResponse, time: float | None
    ) -> None:
        # Called once the response is written: the connection is idle again.
        super().log_access(request, response, time)
        self.limit.idle(self)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            # A malformed request is its sender's doing, and as frequent as the
            # sender likes: one line without a traceback, as for a 4xx.
            name, status = type(error).__name__, error.code
            logger.info("malformed HTTP request: %s %d", name, status, extra=self._peer())
            return
        super().log_exception(*args, **kwargs)

    def _peer(self) -> dict[str, object]:
        peer = self.peername
        return {"client": peer[0]} if isinstance(peer, tuple) and peer else {}


def mark_busy(request: BaseRequest) -> None:
    """The connection of `request` is in a request: never closed to make room."""
    connection = request.protocol
    if isinstance(connection, ClientConnection):
        connection.limit.busy(connection)


def mark_idle(request: BaseRequest) -> None:
    """The connection of `request` waits on its peer (a socket before connection_init)."""
    connection = request.protocol
    if isinstance(connection, ClientConnection):
        connection.limit.idle(connection)
