"""Websocket connections on /graphql: who is on the other end, and for how long.

A browser cannot set headers on a websocket, so graphql-transport-ws
clients authenticate in the `connection_init` payload:
`{"Authorization": "Bearer <JWT>"}`, checked by the same rules as the HTTP
header. The connection lives no longer than that JWT: at its `exp` the
server closes it (4403), and the client reconnects with a fresh token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping

from aiohttp import web
from cross_web import HTTPException
from strawberry.aiohttp.views import AiohttpWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived

from server.auth import AuthenticationError

# 4403, as for a refused connection_init: graphql-ws clients reconnect after it
# (asking their connectionParams for a fresh token), unlike after 4401.
TOKEN_EXPIRED_CODE = 4403
TOKEN_EXPIRED_REASON = "Forbidden: the token expired"

EXPIRY_TIMER = web.RequestKey("connection_expiry", asyncio.Task)


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


class WebSocketAdapter(AiohttpWebSocketAdapter):
    """Messages the view's JSON decoding refuses (a NUL character) close the socket.

    Over HTTP the refusal is a 400 response; on a socket that is no longer
    HTTP it must be the protocol's "bad message" close (4400) instead.
    """

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        try:
            async for message in super().iter_json(ignore_parsing_errors=ignore_parsing_errors):
                yield message
        except HTTPException:
            raise NonJsonMessageReceived from None
