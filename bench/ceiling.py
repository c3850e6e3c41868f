"""The ceiling of a status read in Python here: no ORM, no GraphQL, no logs.

A plain aiohttp handler that answers what ghvault's
``viewer { githubToken { state } }`` answers: the same JWT check with PyJWT
(HS256, `exp` and `sub` required, a known role), one indexed read of the
status columns with the database driver itself (`sqlite3` on the event loop
thread; an `asyncpg` prepared statement from a pool), the state derived from
them, JSON out. It deliberately imports nothing from ghvault, so that making
ghvault faster moves the ratio between the two.

Started by `bench/bench.py` like `bench/serve.py`: settings from the
environment (DATABASE_URL, AUTH_JWT_SECRET), ``listening <port>`` on stdout
once the socket accepts connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from datetime import UTC, datetime
from typing import Any

import asyncpg
import jwt
from aiohttp import web

STATUS_SQL = (
    "SELECT revoked_at, access_token_expires_at, refresh_token_encrypted IS NOT NULL, "
    "refresh_token_expires_at FROM user_github_app_tokens "
    "WHERE user_id = {user} AND github_app_type = 'standard'"
)
ROLES = frozenset({"user", "admin", "service"})
POOL_SIZE = 10


def _moment(value: Any) -> datetime | None:
    """A timestamp as the driver returns it (SQLite: text) as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return value
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def state_of(row: Any) -> str:
    if row is None:
        return "NOT_CONNECTED"
    revoked_at, access_expires, has_refresh, refresh_expires = row
    now = datetime.now(UTC)
    if revoked_at is not None:
        return "REVOKED"
    access_expires = _moment(access_expires)
    if access_expires is None or access_expires > now:
        return "ACTIVE"
    refresh_expires = _moment(refresh_expires)
    if has_refresh and (refresh_expires is None or refresh_expires > now):
        return "EXPIRED"
    return "REFRESH_EXPIRED"


def principal_id(request: web.Request, secret: str) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:
        claims = jwt.decode(
            token.strip(), key=secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or claims.get("role") not in ROLES:
        return None
    return sub


class SQLiteReader:
    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.connection.execute("PRAGMA busy_timeout = 1000")
        self.sql = STATUS_SQL.format(user="?")

    async def read(self, user_id: str) -> Any:
        return self.connection.execute(self.sql, (user_id,)).fetchone()

    async def close(self) -> None:
        self.connection.close()


class PostgresReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.sql = STATUS_SQL.format(user="$1")

    async def read(self, user_id: str) -> Any:
        # Prepared once per connection by asyncpg's statement cache, then one round trip.
        # (`connection.prepare` bypasses that cache: a Parse round trip on every call.)
        return await self.pool.fetchrow(self.sql, user_id)

    async def close(self) -> None:
        await self.pool.close()


async def open_reader(url: str) -> SQLiteReader | PostgresReader:
    if url.startswith("sqlite:///"):
        return SQLiteReader(url.removeprefix("sqlite:///"))
    return PostgresReader(await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE))


async def serve() -> None:
    secret = os.environ["AUTH_JWT_SECRET"]
    reader = await open_reader(os.environ["DATABASE_URL"])

    async def status(request: web.Request) -> web.Response:
        await request.json()  # read and parse the body, as any GraphQL server must
        user_id = principal_id(request, secret)
        if user_id is None:
            return web.json_response({"errors": [{"message": "unauthenticated"}]}, status=401)
        state = state_of(await reader.read(user_id))
        body = {"data": {"viewer": {"githubToken": {"state": state}}}}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/graphql", status)
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
