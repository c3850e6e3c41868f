"""What executing the status document costs in-process, from graphql-core up to ghvault.

Run from the project root::

    .venv/bin/python -m bench.graphql_floor [--requests 5000] [--rounds 5]

CPU time per execution (median of `--rounds` loops of `--requests`), no HTTP:

graphql-core
    `graphql.execute` of the parsed document on a toy schema of the same
    shape (`viewer { githubToken(appType) { state } }`), sync resolvers
    returning constants: the executor alone.
Strawberry, sync / async resolvers
    `Schema.execute` of the same toy schema with Strawberry's ParserCache and
    ValidationCache: what any Strawberry server pays per operation.
ghvault
    ghvault's production schema (every extension, permissions, the real
    resolvers) on a migrated SQLite database holding one ACTIVE token, the
    status read included, through Strawberry's `Schema.execute`.
ghvault, lean path
    the same document on the same schema through the lean path
    (server.graphql.lean): the variables checked, graphql-core's `execute`,
    errors, log fields and metrics done once.

It tells how much of a status read's cost is the GraphQL layer ghvault is
built on, and how much is ghvault's own (compare `bench.bench`'s ceiling and
"status without GraphQL" rows).
"""

# ruff: noqa: E402 -- the project root goes on sys.path before the project's imports

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import strawberry
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from graphql import execute as graphql_execute
from graphql import parse
from strawberry.extensions import ParserCache, ValidationCache

from bench.bench import seed, steady_tokens, user_id
from server.auth import Principal
from server.clock import utc_now
from server.config import Settings
from server.domain.enums import Role
from server.graphql.context import Context
from server.graphql.lean import LeanDocuments
from server.http.app import create_app
from server.http.appkeys import CLOCK, ENGINE, KNOWN_USERS, REFRESH_LOCKS, TOKEN_CHANGES
from server.http.graphql_view import graphql_view
from server.storage import engines
from server.storage.sqlite_pool import PooledSQLiteEngine
from tests.helpers import base_env, migrate

STATUS_QUERY = "query Status { viewer { githubToken { state } } }"
ACTIVE = {"viewer": {"githubToken": {"state": "ACTIVE"}}}


@strawberry.type
class Token:
    state: str


@strawberry.type
class SyncViewer:
    id: str

    @strawberry.field
    def github_token(self, app_type: str = "STANDARD") -> Token:
        return Token(state="ACTIVE")


@strawberry.type
class AsyncViewer:
    id: str

    @strawberry.field
    async def github_token(self, app_type: str = "STANDARD") -> Token:
        return Token(state="ACTIVE")


@strawberry.type
class SyncQuery:
    @strawberry.field
    def viewer(self) -> SyncViewer:
        return SyncViewer(id="user")


@strawberry.type
class AsyncQuery:
    @strawberry.field
    async def viewer(self) -> AsyncViewer:
        return AsyncViewer(id="user")


def toy_schema(query: type) -> strawberry.Schema:
    return strawberry.Schema(query=query, extensions=[ParserCache, ValidationCache])


async def per_execution(run: Callable[[], Awaitable[object]], requests: int, rounds: int) -> float:
    """Median CPU microseconds of one `run()` over `rounds` loops of `requests`."""
    await run()  # warm the caches
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(requests):
            await run()
        results.append((time.process_time() - started) / requests * 1e6)
    return statistics.median(results)


async def measure(requests: int, rounds: int) -> list[tuple[str, float]]:
    rows = []
    document = parse(STATUS_QUERY)
    core_schema = toy_schema(SyncQuery)._schema

    async def core() -> object:
        return graphql_execute(core_schema, document)

    rows.append(("graphql-core execute, toy schema", await per_execution(core, requests, rounds)))
    for label, query in (("sync", SyncQuery), ("async", AsyncQuery)):
        schema = toy_schema(query)

        async def toy(schema: strawberry.Schema = schema) -> object:
            result = await schema.execute(STATUS_QUERY)
            assert not result.errors, result.errors
            return result

        micros = await per_execution(toy, requests, rounds)
        rows.append((f"Strawberry, toy schema, {label} resolvers", micros))
    strawberry, lean = await ghvault_execution(requests, rounds)
    rows.append(("ghvault schema, SQLite, Schema.execute", strawberry))
    rows.append(("ghvault schema, SQLite, lean path", lean))
    return rows


async def ghvault_execution(requests: int, rounds: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="ghvault-floor-") as directory:
        path = Path(directory) / "floor.sqlite"
        url = f"sqlite:///{path}"
        await asyncio.to_thread(migrate, url)
        env = {**base_env(), "DATABASE_URL": url, "GHVAULT_ENV": "production"}
        settings = Settings.from_env(env)
        await seed(PooledSQLiteEngine(str(path)), settings.keyring, steady_tokens(1, utc_now()))
        app = create_app(settings)
        async with engines.serving(app[ENGINE]):
            view = graphql_view(app)
            principal = Principal(id=user_id(0), role=Role.USER)

            # One request object for all (aiohttp's mock costs ~1 ms to make); a context each.
            request = make_mocked_request("POST", "/graphql", app=app)

            def context() -> Context:
                return Context(
                    request=request,
                    response=web.Response(),
                    settings=settings,
                    clock=app[CLOCK],
                    request_id="floor",
                    principal=principal,
                    known_users=app[KNOWN_USERS],
                    refresh_locks=app[REFRESH_LOCKS],
                    token_changes=app[TOKEN_CHANGES],
                )

            async def execute() -> object:
                result = await view.schema.execute(
                    STATUS_QUERY, context_value=context(), operation_name="Status"
                )
                assert result.data == ACTIVE, result
                return result

            lean = view.lean
            assert lean is not None
            operation = lean.operation(STATUS_QUERY, "Status", LeanDocuments.ALL)
            assert operation is not None

            async def execute_lean() -> object:
                result = await lean.execute(operation, None, context(), None)
                assert result.data == ACTIVE, result
                return result

            strawberry = await per_execution(execute, requests, rounds)
            return strawberry, await per_execution(execute_lean, requests, rounds)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="executions per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is printed")
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.requests, args.rounds))
    width = max(len(label) for label, _ in rows)
    print(f"{'CPU per execution of the status document':<{width}}  us")
    for label, micros in rows:
        print(f"{label:<{width}}  {micros:4.0f}")


if __name__ == "__main__":
    main()
