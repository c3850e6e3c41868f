"""Websocket connections on /graphql: who is on the other end, for how long, how big.

A browser cannot set headers on a websocket, so graphql-transport-ws
clients authenticate in the `connection_init` payload:
`{"Authorization": "Bearer <JWT>"}`, checked by the same rules as the HTTP
header. The connection lives no longer than that JWT: at its `exp` the
server closes it (4403), and the client reconnects with a fresh token. A
message is at most GRAPHQL_MAX_BODY_BYTES, like an HTTP body: aiohttp
refuses a longer frame from its header (1009), before reading or decoding
it. At shutdown every socket is closed with 1001, after which graphql-ws
clients reconnect (to another process, or this one restarted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping

from aiohttp import WebSocketError, WSMsgType, web
from cross_web import HTTPException
from strawberry.aiohttp.views import AiohttpWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived

from server.auth import AuthenticationError
from server.http.appkeys import OPEN_SOCKETS, REQUEST_ID

logger = logging.getLogger("ghvault.app")

# 4403, as for a refused connection_init: graphql-ws clients reconnect after it
# (asking their connectionParams for a fresh token), unlike after 4401.
TOKEN_EXPIRED_CODE = 4403
TOKEN_EXPIRED_REASON = "Forbidden: the token expired"
REFUSED_CODE = 4403
GOING_AWAY_CODE = 1001
GOING_AWAY_REASON = b"the server is shutting down"
# A close frame's reason fits in 123 bytes (RFC 6455 5.5); Strawberry's may
# quote a client's id or type at any length.
MAX_CLOSE_REASON_BYTES = 123

EXPIRY_TIMER = web.RequestKey("connection_expiry", asyncio.Task)
SOCKET = web.RequestKey("socket", web.WebSocketResponse)


def connection_authorization(params: Mapping[str, object] | None) -> str:
    """The `Authorization` value of a connection_init payload."""
    authorization = params.get("Authorization") if params else None
    if not isinstance(authorization, str):
        raise AuthenticationError("connection_init payload has no Authorization")
    return authorization


def close_at_expiry(socket: web.WebSocketResponse, expires_at: float) -> asyncio.Task[None]:
    """Close `socket` at `expires_at` (POSIX seconds); cancelled if the socket ends first."""

    async def close_later() -> None:
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        await socket.close(code=TOKEN_EXPIRED_CODE, message=TOKEN_EXPIRED_REASON.encode())

    return asyncio.create_task(close_later())


async def open_socket(
    request: web.Request, protocols: list[str], *, max_message_bytes: int
) -> web.WebSocketResponse:
    """Complete the handshake of a socket, counted among the open ones until it ends."""
    socket = web.WebSocketResponse(protocols=protocols, max_msg_size=max_message_bytes)
    await socket.prepare(request)
    request[SOCKET] = socket
    request.app[OPEN_SOCKETS].add(socket)
    return socket


def socket_ended(request: web.Request) -> None:
    """Forget the socket of `request` (if it became one) and its expiry timer."""
    socket = request.get(SOCKET)
    if socket is not None:
        request.app[OPEN_SOCKETS].discard(socket)
    expiry = request.get(EXPIRY_TIMER)
    if expiry is not None:
        expiry.cancel()


async def close_open_sockets(app: web.Application, *, within: float) -> None:
    """Close every open socket with 1001, waiting at most `within` s for the clients' replies."""
    sockets: set[web.WebSocketResponse] = app[OPEN_SOCKETS]
    if not sockets:
        return
    closing = [
        asyncio.create_task(socket.close(code=GOING_AWAY_CODE, message=GOING_AWAY_REASON))
        for socket in list(sockets)
    ]
    _, pending = await asyncio.wait(closing, timeout=within)
    for task in pending:
        task.cancel()


def close_reason(reason: str) -> str:
    """`reason`, cut (at a character) to what a close frame can carry."""
    return reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


class WebSocketAdapter(AiohttpWebSocketAdapter):
    """Strawberry's reading and closing of an aiohttp socket, with refusals that log one line.

    Messages the view's JSON decoding refuses (a NUL character) close the
    socket: over HTTP the refusal is a 400 response; on a socket that is no
    longer HTTP it must be the protocol's "bad message" close (4400).
    """

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        async for message in self.ws:
            if message.type is WSMsgType.TEXT:
                try:
                    decoded = self.view.decode_json(message.data)
                except HTTPException:
                    if ignore_parsing_errors:
                        continue
                    raise NonJsonMessageReceived from None
                yield decoded
            elif message.type is WSMsgType.BINARY:
                raise NonTextMessageReceived
            elif message.type is WSMsgType.ERROR:
                # aiohttp has closed the socket already: 1009 for a frame over
                # the size limit (read no further than its header), 1002 for
                # one that breaks the protocol.
                error = message.data
                code = error.code if isinstance(error, WebSocketError) else self.ws.close_code
                self._log_close(code, str(error))

    async def close(self, code: int, reason: str) -> None:
        reason = close_reason(reason)
        if code != REFUSED_CODE:  # a refused connection_init logged why already
            self._log_close(code, reason)
        await self.ws.close(code=code, message=reason.encode())

    def _log_close(self, code: int | None, reason: str) -> None:
        logger.info(
            "request %s: websocket closed with %s: %s", self.request[REQUEST_ID], code, reason
        )
