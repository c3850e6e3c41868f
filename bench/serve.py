"""The server process of the benchmark: ghvault on 127.0.0.1, an ephemeral port.

Started by `bench/bench.py` with the settings in its environment, like
`ghvault serve`, with one difference: the port is chosen by the OS and
printed as ``listening <port>`` once the socket accepts connections. Logs are
`ghvault serve`'s: JSON lines at INFO on stderr, an access line per request,
since that is how operators run it (``--log-level WARNING`` leaves them out).
Options select the baselines:

``--engine piccolo-sqlite``
    Piccolo's stock SQLiteEngine (a connection per query, no pragmas)
    instead of ghvault's pooled engine.
``--no-graphql-caches``
    The schema without Strawberry's ParserCache and ValidationCache.

Every server also answers ``POST /bench/status`` (`status_without_graphql`):
the status read with everything ghvault does around GraphQL (middlewares,
access log, JWT check, the same read) and no GraphQL, to tell the two costs
apart.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import strawberry
from aiohttp import web
from piccolo.engine.base import Engine
from piccolo.engine.sqlite import SQLiteEngine
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache

from server.auth import AuthenticationError
from server.config import Settings
from server.domain.enums import AppType
from server.domain.status import token_status
from server.http.app import create_app
from server.http.appkeys import CLOCK
from server.http.graphql_view import GhvaultGraphQLView, verify_bearer
from server.http.logs import RedactingAccessLogger, configure_logging
from server.http.server import settle_start_up_objects
from server.http.workers import run_workers
from server.storage import engines, sqlite_pool

ENGINES = ("default", "piccolo-sqlite")
STATUS_WITHOUT_GRAPHQL_PATH = "/bench/status"


def stock_sqlite_engine(settings: Settings) -> Engine[Any]:
    """Piccolo's SQLiteEngine on the configured file, with ghvault's busy timeout."""
    path = settings.database.sqlite_path
    if path is None:
        raise SystemExit("--engine piccolo-sqlite needs a sqlite:/// DATABASE_URL")
    engine = SQLiteEngine(path=str(path), timeout=sqlite_pool.SQLITE_BUSY_TIMEOUT_MS / 1000)
    engines.bind_tables(engine)
    return engine


def graphql_view(app: web.Application) -> GhvaultGraphQLView:
    """The view serving POST /graphql in `app`."""
    for route in app.router.routes():
        if isinstance(route.handler, GhvaultGraphQLView):
            return route.handler
    raise RuntimeError("no GraphQL view among the app's routes")


def drop_graphql_caches(app: web.Application) -> None:
    """Remove ParserCache and ValidationCache from the schema the app serves."""
    schema = graphql_view(app).schema
    assert isinstance(schema, strawberry.Schema)
    schema.extensions = tuple(factory for factory in schema.extensions if not _is_cache(factory))


async def status_without_graphql(request: web.Request) -> web.Response:
    """`viewer { githubToken { state } }` answered by hand: the JWT check, the body
    decoded, ghvault's status read of the STANDARD token, JSON out."""
    try:
        authorization = request.headers.get("Authorization", "")
        principal = (await verify_bearer(request.app, authorization)).principal
    except AuthenticationError:
        return web.json_response({"errors": [{"message": "unauthenticated"}]}, status=401)
    try:
        json.loads(await request.read())
    except ValueError:  # UnicodeDecodeError included
        return web.json_response({"errors": [{"message": "the body is not JSON"}]}, status=400)
    status = await token_status(principal.id, AppType.STANDARD, request.app[CLOCK]())
    return web.json_response({"data": {"viewer": {"githubToken": {"state": status.state.name}}}})


def _is_cache(factory: type[SchemaExtension] | Callable[[], SchemaExtension]) -> bool:
    return isinstance(factory(), ParserCache | ValidationCache)


async def serve(engine_kind: str, graphql_caches: bool, port: int = 0) -> None:
    settings = Settings.from_env(os.environ)
    engine = stock_sqlite_engine(settings) if engine_kind == "piccolo-sqlite" else None
    app = create_app(settings, engine=engine)
    if not graphql_caches:
        drop_graphql_caches(app)
    app.router.add_post(STATUS_WITHOUT_GRAPHQL_PATH, status_without_graphql)
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=port != 0 or None).start()
        port = runner.addresses[0][1]
        settle_start_up_objects()  # as `ghvault serve` does once it listens
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print(f"listening {port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=ENGINES, default="default")
    parser.add_argument("--no-graphql-caches", dest="graphql_caches", action="store_false")
    parser.add_argument("--log-level", choices=("INFO", "WARNING"), default="INFO")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port, as `ghvault serve`"
    )
    args = parser.parse_args(argv)
    if args.workers > 1:
        worker = functools.partial(_worker, args.engine, args.graphql_caches, args.log_level)
        raise SystemExit(run_workers(args.workers, "127.0.0.1", 0, worker))
    configure_logging(getattr(logging, args.log_level))
    asyncio.run(serve(args.engine, args.graphql_caches))


def _worker(engine_kind: str, graphql_caches: bool, log_level: str, host: str, port: int) -> int:
    configure_logging(getattr(logging, log_level))
    asyncio.run(serve(engine_kind, graphql_caches, port))
    return 0


if __name__ == "__main__":
    main()
