"""The Strawberry floor of a status read: Strawberry on aiohttp as its documentation
shows it, and nothing of ghvault's.

The same request as ghvault's ``query Status { viewer { githubToken { state } } }``
answered by a minimal Strawberry schema of that shape, served by Strawberry's
stock aiohttp view with its stock ParserCache and ValidationCache: the JWT
check, the status read and the state derived are `bench/ceiling.py`'s (PyJWT;
`sqlite3` on the event loop thread, or an `asyncpg` prepared statement from a
pool), so the difference from the ceiling is what Strawberry costs, and the
difference from ghvault is what ghvault adds to Strawberry (or saves).

Started by `bench/bench.py` like the ceiling: settings from the environment
(DATABASE_URL, AUTH_JWT_SECRET), ``listening <port>`` on stdout once the socket
accepts connections.
"""

from __future__ import annotations

import asyncio
import os
import signal
from enum import Enum
from typing import Any

import strawberry
from aiohttp import web
from strawberry.aiohttp.views import GraphQLView
from strawberry.extensions import ParserCache, ValidationCache

from bench.ceiling import PostgresReader, SQLiteReader, open_reader, principal_id, state_of


@strawberry.enum
class TokenState(Enum):
    NOT_CONNECTED = "NOT_CONNECTED"
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    REFRESH_EXPIRED = "REFRESH_EXPIRED"
    REVOKED = "REVOKED"


@strawberry.enum
class GithubAppType(Enum):
    STANDARD = "standard"
    LITE = "lite"


@strawberry.type
class GithubTokenStatus:
    state: TokenState


@strawberry.type
class Viewer:
    id: strawberry.ID

    @strawberry.field
    async def github_token(
        self, info: strawberry.Info, app_type: GithubAppType = GithubAppType.STANDARD
    ) -> GithubTokenStatus:
        reader: SQLiteReader | PostgresReader = info.context["reader"]
        return GithubTokenStatus(state=TokenState(state_of(await reader.read(self.id))))


@strawberry.type
class Query:
    @strawberry.field
    def viewer(self, info: strawberry.Info) -> Viewer:
        user_id = info.context["user_id"]
        if user_id is None:
            raise PermissionError("unauthenticated")
        return Viewer(id=strawberry.ID(user_id))


class FloorView(GraphQLView[dict[str, Any], None]):
    def __init__(self, schema: strawberry.Schema, secret: str, reader: Any) -> None:
        super().__init__(schema, graphql_ide=None)
        self.secret = secret
        self.reader = reader

    async def get_context(
        self, request: web.Request, response: web.Response | web.WebSocketResponse
    ) -> dict[str, Any]:
        return {
            "request": request,
            "response": response,
            "user_id": principal_id(request, self.secret),
            "reader": self.reader,
        }


async def serve() -> None:
    secret = os.environ["AUTH_JWT_SECRET"]
    reader = await open_reader(os.environ["DATABASE_URL"])
    schema = strawberry.Schema(query=Query, extensions=[ParserCache, ValidationCache])
    app = web.Application()
    app.router.add_route("*", "/graphql", FloorView(schema, secret, reader))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print(f"listening {runner.addresses[0][1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await reader.close()


if __name__ == "__main__":
    asyncio.run(serve())
