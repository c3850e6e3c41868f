"""A graphql-transport-ws client written from the protocol, independent of Strawberry.

https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md: the client
sends `connection_init` (here with the bearer token in the payload), waits for
`connection_ack`, then `subscribe`s by id and reads `next` / `error` /
`complete` messages for that id. Every frame received is kept, so tests can
check that none carries a secret.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

PROTOCOL = "graphql-transport-ws"
WAIT_SECONDS = 15.0


class SocketClosed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class GraphQLWebSocket:
    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.frames: list[str] = []
        self._ids = itertools.count(1)

    async def send(self, message: dict[str, Any]) -> None:
        await self.socket.send_str(json.dumps(message))

    async def receive(self, wait: float = WAIT_SECONDS) -> dict[str, Any]:
        """The next protocol message (pings answered); SocketClosed when the server closes."""
        while True:
            frame = await self.socket.receive(timeout=wait)
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                raise SocketClosed(self.socket.close_code, str(frame.extra or ""))
            assert frame.type is aiohttp.WSMsgType.TEXT, frame
            self.frames.append(frame.data)
            message = json.loads(frame.data)
            if message["type"] == "ping":
                await self.send({"type": "pong"})
                continue
            return message

    async def init(self, authorization: str | None) -> dict[str, Any]:
        payload = {"Authorization": authorization} if authorization else {}
        await self.send({"type": "connection_init", "payload": payload})
        return await self.receive()

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        operation_id = str(next(self._ids))
        await self.send(
            {
                "id": operation_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables or {}},
            }
        )
        return operation_id

    async def next_payload(self, operation_id: str) -> dict[str, Any]:
        """The payload of the next `next` (or `error`, as {"errors": ...}) for the operation."""
        while True:
            message = await self.receive()
            if message.get("id") != operation_id:
                continue
            if message["type"] == "next":
                return message["payload"]
            if message["type"] == "error":
                return {"errors": message["payload"]}
            raise AssertionError(f"unexpected {message}")

    async def complete(self, operation_id: str) -> None:
        await self.send({"id": operation_id, "type": "complete"})

    async def closed(self, wait: float = WAIT_SECONDS) -> SocketClosed:
        """Wait for the server to close the socket; what it said."""
        try:
            async with asyncio.timeout(wait):
                while True:
                    await self.receive(wait)
        except SocketClosed as closed:
            return closed


@asynccontextmanager
async def connect(session: Any, url: str = "/graphql") -> AsyncIterator[GraphQLWebSocket]:
    """`session`: an aiohttp ClientSession (with a full URL) or a pytest-aiohttp TestClient."""
    socket = await session.ws_connect(url, protocols=[PROTOCOL])
    try:
        yield GraphQLWebSocket(socket)
    finally:
        await socket.close()
